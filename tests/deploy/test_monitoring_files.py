"""The shipped Prometheus, Alertmanager and Grafana files, checked by the real tools.

promtool and amtool come from Debian's prometheus and prometheus-alertmanager.
The live checks against a running server are in test_monitoring_stack.py.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from imgclass.ops import metrics
from tests.deploy.monitoring import (
    ALERTMANAGER_YML,
    ALERTS_TEST_YML,
    ALERTS_YML,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    PROMETHEUS_YML,
    alert_queries,
    alert_rules,
    as_bool_comparisons,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    load_yaml,
    metric_families,
)
from tests.support.system import require_binary

DATASOURCE_UID = "imgclass-prometheus"


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool", "prometheus")


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_binary("amtool", "prometheus-alertmanager")


def test_promtool_accepts_the_config_and_its_rule_file(promtool):
    done = run(promtool, "check", "config", str(PROMETHEUS_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_promtool_accepts_the_alert_rules(promtool):
    done = run(promtool, "check", "rules", str(ALERTS_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool):
    done = run(promtool, "test", "rules", ALERTS_TEST_YML.name, cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it():
    fired = {
        case["alertname"]
        for test in load_yaml(ALERTS_TEST_YML)["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == set(alert_queries())


def test_every_alert_has_a_severity_for_routing_and_words_for_people():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["alert"].startswith("Imgclass")
    required = {
        "ImgclassInstanceDown",
        "ImgclassHighErrorRate",
        "ImgclassHighLatencyP99",
        "ImgclassFallbackInUse",
        "ImgclassDriftDetected",
        "ImgclassNotReady",
        "ImgclassDiskSpaceLow",
        "ImgclassBackupTooOld",
    }
    assert required <= set(names)


def test_alertmanager_config_is_valid_and_routes_by_severity(amtool):
    done = run(amtool, "check-config", str(ALERTMANAGER_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    for labels, receiver in (
        (["severity=critical", "alertname=ImgclassNotReady"], "pager"),
        (["severity=warning", "alertname=ImgclassDriftDetected"], "tickets"),
        (["alertname=SomethingUnlabelled"], "tickets"),
    ):
        done = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.split() == [receiver], labels
    config = load_yaml(ALERTMANAGER_YML)
    for receiver in config["receivers"]:
        assert all(hook["send_resolved"] for hook in receiver["webhook_configs"])


def test_queries_only_read_metrics_the_service_exports():
    exported = {family.name for family in metrics.REGISTRY.collect()} | {"up"}
    for source in (dashboard_queries(), alert_queries()):
        for where, expr in source.items():
            unknown = metric_families(expr) - exported
            assert not unknown, f"{where}: {sorted(unknown)}"


def test_grafana_dashboard_is_well_formed_and_covers_the_service():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"].strip()
    for where, expr in dashboard_queries().items():
        assert "$" not in expr, f"{where} uses a variable Grafana would not fill: {expr}"
    used = set().union(*(metric_families(e) for e in dashboard_queries().values()))
    for topic in (
        "imgclass_http_requests",  # traffic, errors
        "imgclass_http_request_duration_seconds",  # latency percentiles
        "imgclass_stage_duration_seconds",
        "imgclass_cache_hits",
        "imgclass_fallback_activations",
        "imgclass_circuit_breaker_state",
        "imgclass_drift_psi",
        "imgclass_predictions",  # top classes
        "imgclass_feedback",  # feedback traffic
        "imgclass_model_accuracy_ratio",  # accuracy per model
        "imgclass_class_accuracy_ratio",  # accuracy per class
    ):
        assert topic in used, topic


def test_grafana_provisioning_points_at_the_dashboard_and_datasource():
    sources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "imgclass.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert sorted(p.name for p in (GRAFANA_DIR / "dashboards").iterdir()) == ["imgclass.json"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="imgclass"} == 0', 'up{job="imgclass"} == bool 0'),
        ('a{status!~"2..", x!="y"} > 0.05', 'a{status!~"2..", x!="y"} > bool 0.05'),
        ("a >= on (job) group_left b", "a >= bool on (job) group_left b"),
        ("time() - max(t) > 26 * 3600", "time() - max(t) > bool 26 * 3600"),
        ('a{l=">=<"} <= 1', 'a{l=">=<"} <= bool 1'),
        ("a + b", "a + b"),
    ],
)
def test_alert_conditions_become_bool_comparisons(expr, expected):
    assert as_bool_comparisons(expr) == expected


ERROR_RATIO = "API server-error ratio/A"
BACKUP_AGE = "Newest backup age/A"


def _series(name: str, values: str, labels: str = "") -> dict:
    selector = ", ".join(filter(None, ['job="imgclass"', 'instance="a:8000"', labels]))
    return {"series": f"{name}{{{selector}}}", "values": values}


def _requests(endpoint: str, status: str, per_15s: int) -> dict:
    labels = f'endpoint="{endpoint}", status="{status}"'
    return _series("imgclass_http_requests_total", f"0+{per_15s}x40", labels)


def _backup(values: str) -> dict:
    return _series("imgclass_backup_last_success_timestamp_seconds", values)


def test_dashboard_answers_no_errors_and_no_backup_sensibly(promtool, tmp_path):
    """Evaluated by promtool's PromQL engine on made-up series, including the quiet states."""
    queries = dashboard_queries()

    def case(inputs: list[dict], expr: str, samples: list[float], at: str = "10m") -> dict:
        expected = [{"labels": "{}", "value": value} for value in samples]
        return {
            "interval": "15s",
            "input_series": inputs,
            "promql_expr_test": [{"expr": expr, "eval_time": at, "exp_samples": expected}],
        }

    ok_only = [_requests("/api/v1/predict", "200", 45), _requests("/readyz", "503", 15)]
    failing = [*ok_only, _requests("/api/v1/predict", "503", 15)]
    probes_only = [_requests("/readyz", "200", 15)]
    tests = [
        # No 5xx yet (the series does not exist): 0, not an empty panel.
        case(ok_only, queries[ERROR_RATIO], [0]),
        case(failing, queries[ERROR_RATIO], [0.25]),  # 1/s of 4/s; probes never count
        case(probes_only, queries[ERROR_RATIO], []),  # no API traffic: no ratio at all
        # No backup (the gauge is 0): no value, not 56 years. Here time() starts at 0.
        case([_backup("0x40")], queries[BACKUP_AGE], []),
        case([_backup("0x10 3600x500")], queries[BACKUP_AGE], [7200 - 3600], at="2h"),
    ]
    spec = tmp_path / "dashboard_test.yml"
    unit_tests = {"rule_files": [], "evaluation_interval": "15s", "tests": tests}
    spec.write_text(yaml.safe_dump(unit_tests))
    done = run(promtool, "test", "rules", spec.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
