"""The monitoring stack for real: `imgclass serve` ×2, Prometheus, Alertmanager, a webhook.

One healthy server (two workers, the real model) and one without a model (every
predict is a 503, /readyz fails) are scraped by a real Prometheus that runs the
shipped alerts.yml and sends to a real Alertmanager running the shipped
alertmanager.yml, whose webhooks point at a small HTTP receiver in this test.
Only the intervals are shortened (scrape and evaluation 1 s, every `for` 1 s,
Alertmanager's group wait and interval 1 s); expressions, routes and receivers
are the shipped ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector

from imgclass.vision.classifier import model_path
from imgclass.vision.export import MODEL_NAME
from tests.deploy.monitoring import (
    ALERTMANAGER_YML,
    ALERTS_YML,
    PROMETHEUS_YML,
    alert_queries,
    as_bool_comparisons,
    dashboard_queries,
    load_yaml,
    metric_families,
)
from tests.support.prom import parse, value
from tests.support.servers import (
    http_get,
    pid_running,
    start_alertmanager,
    start_imgclass,
    start_prometheus,
)
from tests.support.system import require_binary

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/predict"
# Metrics whose producers are not in the code yet, so no series exists for them here.
# Expressions over them must still parse; they are excused only from returning data.
# (Empty: every metric the dashboard and the alerts read has a producer.)
AWAITING_PRODUCERS: set[str] = set()


class WebhookReceiver:
    """Records every notification Alertmanager posts: (path, payload)."""

    def __init__(self):
        self.notifications: list[tuple[str, dict]] = []
        lock = threading.Lock()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, alertname: str) -> list[tuple[str, dict]]:
        """(path, alert) for every alert of that name in every notification so far."""
        return [
            (path, alert)
            for path, payload in list(self.notifications)
            for alert in payload["alerts"]
            if alert["labels"]["alertname"] == alertname
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_prometheus_config(workdir: Path, targets: list[str], am: str) -> Path:
    """The shipped configs with short intervals, local targets and the local webhook."""
    alerts = load_yaml(ALERTS_YML)
    for group in alerts["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "1s"
    (workdir / "alerts.yml").write_text(yaml.safe_dump(alerts))

    prom = load_yaml(PROMETHEUS_YML)
    prom["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    prom["rule_files"] = [str(workdir / "alerts.yml")]
    prom["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [am]}]
    (job,) = prom["scrape_configs"]
    job["static_configs"] = [{"targets": targets}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom))
    return workdir / "prometheus.yml"


def write_alertmanager_config(workdir: Path, receiver: str) -> Path:
    config = load_yaml(ALERTMANAGER_YML)

    def shorten(route: dict) -> None:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    for entry in config["receivers"]:
        for hook in entry["webhook_configs"]:
            hook["url"] = receiver + urllib.parse.urlsplit(hook["url"]).path
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    return workdir / "alertmanager.yml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_dir):
    prometheus_bin = require_binary("prometheus", "prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    root = tmp_path_factory.mktemp("monitoring")
    empty_models = root / "no-models"
    empty_models.mkdir()
    healthy = start_imgclass(
        root / "healthy",
        model_dir,
        metrics_dir=root / "healthy-metrics",
        # The accuracy gauges are refreshed by the background monitor: often, for the test.
        env={"IMGCLASS_DRIFT_INTERVAL_S": "1"},
    )
    broken = start_imgclass(root / "broken", empty_models, metrics_dir=root / "broken-metrics")
    receiver = WebhookReceiver()
    started = []
    try:
        healthy.wait_until("/readyz")
        broken.wait_until("/healthz")
        am = start_alertmanager(
            alertmanager_bin, write_alertmanager_config(root, receiver.base), root / "am"
        )
        started.append(am)
        config = write_prometheus_config(root, [healthy.address, broken.address], am.address)
        prometheus = start_prometheus(prometheus_bin, config, root / "prom")
        started.append(prometheus)
        yield {
            "healthy": healthy,
            "broken": broken,
            "prometheus": prometheus,
            "receiver": receiver,
        }
    finally:
        for process in reversed(started):
            process.stop()
        receiver.close()
        for server in (broken, healthy):
            output = server.stop()
            assert "Traceback" not in output, output
            # Every worker exits by itself: none aborted, none killed after the grace period.
            assert server.proc.returncode == 0 and "was sent SIG" not in output, output
            assert not server.metrics_dir.exists()  # the master removed its files


def scrape(server) -> dict:
    status, body = http_get(server.base + "/metrics")
    assert status == 200
    return parse(body.decode())


def post(server, data: bytes, content_type="image/jpeg", query="") -> int:
    req = urllib.request.Request(
        server.base + PREDICT + query, data=data, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def send_feedback(server, image: bytes, class_id: int) -> None:
    """Predict ``image``, then say its true class."""
    req = urllib.request.Request(
        server.base + PREDICT, data=image, headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        request_id = json.load(resp)["request_id"]
    body = json.dumps({"request_id": request_id, "class_id": class_id}).encode()
    req = urllib.request.Request(
        server.base + "/api/v1/feedback", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 201


def query(prometheus, expr: str) -> tuple[int, dict]:
    url = prometheus.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    return status, json.loads(body)


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


def predicts_per_worker(metrics_dir: Path) -> dict[int, float]:
    """Successful predicts counted by each process, from its own file in the directory."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "imgclass_http_requests_total" and sample.labels == {
                    "endpoint": PREDICT,
                    "status": "200",
                }:
                    counts[int(path.stem.split("_")[1])] = sample.value
    return counts


def test_counters_are_exact_across_two_workers(stack, cat_jpeg):
    server = stack["healthy"]
    labels = {"endpoint": PREDICT, "status": "200"}
    before = value(scrape(server), "imgclass_http_requests_total", **labels)
    sent = 0
    with ThreadPoolExecutor(max_workers=12) as pool:
        # Until both workers have answered some: the point is counting across processes.
        for _ in range(5):
            statuses = list(pool.map(lambda _: post(server, cat_jpeg, query="?top_k=1"), range(24)))
            assert statuses == [200] * 24
            sent += 24
            if sum(1 for n in predicts_per_worker(server.metrics_dir).values() if n) >= 2:
                break
    assert sum(1 for n in predicts_per_worker(server.metrics_dir).values() if n) >= 2
    # Whichever worker answers the scrape, it reports the whole server.
    for _ in range(8):
        after = value(scrape(server), "imgclass_http_requests_total", **labels)
        assert after - before == sent


@pytest.fixture(scope="module")
def traffic(stack, cat_jpeg, coffee_jpeg):
    """Successes, client errors and server errors, then wait until Prometheus has them."""
    healthy, broken, prometheus = stack["healthy"], stack["broken"], stack["prometheus"]
    for image in (cat_jpeg, coffee_jpeg, cat_jpeg):
        assert post(healthy, image) == 200
    send_feedback(healthy, cat_jpeg, class_id=281)  # tabby
    assert post(healthy, b"plain text", content_type="text/plain") == 400
    assert post(healthy, b"<svg/>", content_type="image/svg+xml") == 415
    assert http_get(healthy.base + "/no/such/page")[0] == 404
    for _ in range(3):
        assert post(broken, cat_jpeg) == 503

    def ingested():
        # Two scrapes of each server since its traffic: every rate() over it has data.
        for expr in (
            'count_over_time(imgclass_http_requests_total{status="503"}[1m]) >= 2',
            "min(count_over_time(imgclass_predictions_total[1m])) >= 2",
            "imgclass_model_feedback_events > 0",  # the monitor has seen the feedback
        ):
            status, body = query(prometheus, expr)
            if status != 200 or not body["data"]["result"]:
                return False
        return True

    wait_for(ingested, "Prometheus to scrape the traffic")

    # No backup yet: the dashboard shows no age (not the time since 1970) …
    backup_age = dashboard_queries()["Newest backup age/A"]
    status, body = query(prometheus, backup_age)
    assert status == 200 and body["data"]["result"] == [], body
    # … then one, taken by the CLI next to the healthy server (its /metrics reads the dir).
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCLASS_")}
    created = subprocess.run(
        [str(Path(sys.executable).parent / "imgclass"), "backup", "create"],
        env={**env, "IMGCLASS_DATA_DIR": str(healthy.data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr

    def backed_up():
        status, body = query(prometheus, "imgclass_backup_last_success_timestamp_seconds > 0")
        return status == 200 and body["data"]["result"]

    wait_for(backed_up, "Prometheus to scrape the backup's timestamp")


def test_every_dashboard_and_alert_expression_returns_data(stack, traffic):
    prometheus = stack["prometheus"]
    expressions = {f"dashboard {k}": v for k, v in dashboard_queries().items()}
    for name, expr in alert_queries().items():
        expressions[f"alert {name}"] = expr
        expressions[f"alert {name} (as bool)"] = as_bool_comparisons(expr)
    empty, excused = [], []
    for where, expr in expressions.items():
        status, body = query(prometheus, expr)
        assert status == 200 and body["status"] == "success", f"{where}: {body}"
        if where.startswith("alert") and not where.endswith("(as bool)"):
            continue  # a condition that is false returns nothing: the bool form checks data
        if metric_families(expr) & AWAITING_PRODUCERS:
            excused.append(where)
        elif not body["data"]["result"]:
            empty.append(f"{where}: {expr}")
    assert not empty, "no data:\n" + "\n".join(empty)
    # An excuse lasts only while it is true: once a producer exports its metric, this
    # fails until the metric leaves AWAITING_PRODUCERS and its expressions are checked.
    for family in AWAITING_PRODUCERS:
        _, body = query(prometheus, f'{{__name__=~"{family}(_total)?"}}')
        assert not body["data"]["result"], f"{family} has data now: drop it from the excused set"
    assert bool(excused) == bool(AWAITING_PRODUCERS)  # an entry there excuses something


def test_the_dashboard_shows_the_traffic(stack, traffic):
    prometheus = stack["prometheus"]
    _, body = query(
        prometheus,
        'sum by (instance) (imgclass_http_requests_total{job="imgclass", status="503"})',
    )
    (row,) = body["data"]["result"]
    assert row["metric"]["instance"] == stack["broken"].address
    _, body = query(prometheus, 'sum(imgclass_predictions_total{job="imgclass"})')
    assert float(body["data"]["result"][0]["value"][1]) >= 3
    _, body = query(prometheus, 'min by (instance, check) (imgclass_ready{job="imgclass"})')
    readiness = {
        (r["metric"]["instance"], r["metric"]["check"]): r["value"][1]
        for r in body["data"]["result"]
    }
    assert readiness[(stack["healthy"].address, "model")] == "1"
    assert readiness[(stack["broken"].address, "model")] == "0"
    assert readiness[(stack["broken"].address, "database")] == "1"
    buckets = (
        "imgclass_http_request_duration_seconds_bucket"
        f'{{endpoint="{PREDICT}", instance="{stack["healthy"].address}"}}'
    )
    _, body = query(prometheus, f"histogram_quantile(0.5, sum by (le) ({buckets}))")
    median = float(body["data"]["result"][0]["value"][1])
    assert 0 < median < math.inf
    # The Model panel tells the primary from the fallback (the broken server has neither).
    _, body = query(prometheus, dashboard_queries()["Model/A"])
    roles = {(r["metric"]["instance"], r["metric"]["role"]) for r in body["data"]["result"]}
    assert roles == {(stack["healthy"].address, "primary"), (stack["healthy"].address, "fallback")}
    _, body = query(prometheus, dashboard_queries()["Newest backup age/A"])
    (age,) = body["data"]["result"]
    assert 0 <= float(age["value"][1]) < 3600  # taken by the traffic fixture, minutes ago


def test_a_failing_server_pages_through_alertmanager_and_resolves(stack, model_dir):
    broken, receiver = stack["broken"], stack["receiver"]

    def notified(status):
        def match():
            return [
                (path, alert)
                for path, alert in receiver.alerts("ImgclassNotReady")
                if alert["status"] == status
                and alert["labels"]["instance"] == broken.address
                and alert["labels"]["check"] == "model"
            ]

        return match

    ((path, alert), *_) = wait_for(notified("firing"), "the firing ImgclassNotReady")
    assert path == "/alerts/critical"  # routed by severity to the pager
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == (
        f"imgclass {broken.address} is not ready: model check failing"
    )
    healthy = stack["healthy"].address
    assert not [
        a for _, a in receiver.alerts("ImgclassNotReady") if a["labels"]["instance"] == healthy
    ]

    # The operator exports the model and reloads the server: new workers load it.
    old_workers = _live_gauge_pids(broken.metrics_dir) - {broken.proc.pid}
    assert old_workers
    target = model_path(broken.model_dir, MODEL_NAME, "fp32")
    shutil.copyfile(model_path(model_dir, MODEL_NAME, "fp32"), target)
    os.kill(broken.proc.pid, signal.SIGHUP)
    broken.wait_until("/readyz", timeout=90)

    wait_for(notified("resolved"), "ImgclassNotReady to resolve")
    # The replaced workers' live gauges went with them (gunicorn's child_exit hook).
    wait_for(lambda: not any(map(pid_running, old_workers)), "the old workers to exit", timeout=60)
    wait_for(
        lambda: not old_workers & _live_gauge_pids(broken.metrics_dir),
        "the exited workers' live gauges to be dropped",
        timeout=10,
    )
    for path, payload in receiver.notifications:
        severity = path.rsplit("/", 1)[1]
        assert {a["labels"]["severity"] for a in payload["alerts"]} == {severity}, payload


def _live_gauge_pids(metrics_dir: Path) -> set[int]:
    return {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_live*_*.db")}
