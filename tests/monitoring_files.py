"""The monitoring stack's files (docker/): where they are, and the queries in them.

Shared by test_prometheus_config.py (promtool, lint), test_prometheus_live.py
(every query against a real Prometheus) and test_docker_stack.py (compose).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from labkit import paths, prometheus

DOCKER = paths.ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
RULES_DIR = DOCKER / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((DOCKER / "prometheus" / "tests").glob("*.yml"))
GRAFANA = DOCKER / "grafana"
DASHBOARDS = sorted(prometheus.DASHBOARDS.glob("*.json"))
DATASOURCES = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
DASHBOARD_PROVIDERS = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def rules() -> list[dict]:
    """Every rule of the shipped rule files, with its ``file`` and ``group``."""
    found = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                found.append({**rule, "file": path.name, "group": group["name"]})
    return found


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def recordings() -> list[dict]:
    return [r for r in rules() if "record" in r]


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p.get("type") != "row"]


def panel_targets() -> list[tuple[str, dict, dict]]:
    """``(dashboard file, panel, target)`` for every query of every dashboard."""
    return [
        (name, panel, target)
        for name, board in dashboards().items()
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def datasource_uid() -> str:
    """The uid of the one provisioned Prometheus datasource."""
    sources = [s for path in DATASOURCES for s in load_yaml(path)["datasources"] if s["type"] == "prometheus"]
    assert len(sources) == 1, sources
    return sources[0]["uid"]


COMPOSE_JOB = "triton"  # the job of docker/prometheus/prometheus.yml
OPERATOR_JOB = "triton/triton"  # the Prometheus Operator's job for PodMonitor triton in namespace triton


def variables(dashboard: dict) -> dict[str, dict]:
    """A dashboard's template variables, by name."""
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def concrete(expr: str, rate_interval: str = "5s", model: str = ".+", job: str = COMPOSE_JOB) -> str:
    """A dashboard query with Grafana's variables replaced, ready for Prometheus' API."""
    return prometheus.grafana_expr(expr, rate_interval, job=job, model=model)


def label_values_query(variable: dict) -> tuple[str, str]:
    """``(label, series selector)`` of a ``label_values(selector, label)`` query variable."""
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, f"{variable['name']}: not a label_values query: {query}"
    return match.group(2), match.group(1)


def recorded_in_compose_rules(expr: str) -> list[str]:
    """The recording rules of docker/prometheus/rules/ that ``expr`` reads (a cluster has them only if loaded)."""
    return [r["record"] for r in recordings() if re.search(rf"(?<![\w:]){re.escape(r['record'])}(?![\w:])", expr)]


GPU_METRICS = ("nv_gpu_",)


def needs_gpu(expr: str) -> bool:
    """True for queries on Triton's GPU metrics (no data on a CPU-only host)."""
    return any(metric in expr for metric in GPU_METRICS)


def alert_panels() -> list[tuple[str, dict, dict]]:
    """``(dashboard file, panel, alert)`` for each panel whose description names one alert and draws a threshold."""
    found = []
    for name, board in dashboards().items():
        for panel in panels(board):
            named = [a for a in alerts() if re.search(rf"\b{a['alert']}\b", panel["description"])]
            if len(named) == 1 and panel["type"] == "timeseries" and "thresholds" in panel["fieldConfig"]["defaults"]:
                found.append((name, panel, named[0]))
    return found


def alert_threshold(alert: dict) -> tuple[str, float]:
    """``("<" or ">", number)``: where an alert's first line (``signal < number``) puts its threshold."""
    match = re.search(r"([<>])\s*([0-9.]+)\s*$", alert["expr"].splitlines()[0])
    assert match, f"{alert['alert']}: no threshold on its first line"
    return match.group(1), float(match.group(2))
