"""The shipped monitoring files, read the way the tests need them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.conftest import REPO

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST_YML = PROMETHEUS_DIR / "alerts_test.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD_JSON = GRAFANA_DIR / "dashboards" / "imgclass.json"

# What Grafana puts in place of its variables when it sends a query; the rate interval
# must cover at least two scrapes (the live test scrapes every second).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m"}

_METRIC = re.compile(r"\b(imgclass_[a-z0-9_]+|up)\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return panels


def dashboard_queries() -> dict[str, str]:
    """Every query of the dashboard as Prometheus receives it: "panel/refId" -> PromQL."""
    queries = {}
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']}/{target['refId']}"] = expr
    return queries


def alert_queries() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for rule in alert_rules()}


def metric_families(expr: str) -> set[str]:
    """The metric families a PromQL expression reads (``up`` or ``imgclass_*``)."""
    names = set()
    for name in _METRIC.findall(expr):
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names


def as_bool_comparisons(expr: str) -> str:
    """``expr`` with each comparison outside label matchers turned into a ``bool`` one.

    An alert's expression is a filter: it returns nothing while the condition is
    false. With ``bool`` it returns 0 or 1 for every series it watches, which
    shows that the series it needs exist and the arithmetic works on real data.
    """
    out, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
            out.append(ch)
        elif ch == "{":
            depth += 1
            out.append(ch)
        elif ch == "}":
            depth -= 1
            out.append(ch)
        elif depth == 0 and ch in "<>=!":
            op = expr[i : i + 2] if expr[i : i + 2] in ("==", "!=", ">=", "<=") else ch
            if op in ("=", "!"):  # not a comparison (=~ and !~ live inside braces)
                out.append(ch)
            else:
                out.append(op + " bool")
                i += len(op) - 1
        else:
            out.append(ch)
        i += 1
    return "".join(out)
