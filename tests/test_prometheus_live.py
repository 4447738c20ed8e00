"""Every shipped rule and dashboard query, run by a real Prometheus scraping a real Triton under traffic.

Prometheus loads docker/prometheus/rules/*.yml as they are and scrapes, in the
job ``triton`` the rules and dashboards expect:

- Triton with the reference model, under traffic with 30% bad requests and
  the largest inputs (slow requests), and with digits_classifier, sent held-out
  images shifted two pixels (drifted: every quality signal past its threshold);
- a Triton with no model loaded (answers, but exports no demo_* metrics);
- a port where nothing listens (a Triton that is down).

So every rule has something to say. Scrapes and rule evaluations run every
second instead of the stack's 15 s; the rules' 5m windows then hold all the
run, and their ``for:`` (1-10 minutes) keeps the alerts pending.
Dashboard queries run with ``$__rate_interval`` replaced by 5s (five scrapes),
``$model`` by its "All" value and ``$job`` by each Prometheus' job.

A second Prometheus scrapes the same two Triton servers as the Prometheus
Operator scrapes a PodMonitor's pods (job ``triton/triton``: ``<namespace>/<name>``,
with ``namespace`` and ``pod`` labels) and loads deploy/kubernetes/prometheusrule.yaml:
the dashboard, as kube-prometheus-stack's Grafana shows it, must find its data there too.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
import yaml

from labkit import paths, process, traffic, triton
from labkit import prometheus as lp
from scripts import train_digits
from tests import monitoring_files as mf
from tests.conftest import require_tool

pytestmark = pytest.mark.integration  # a real Prometheus and a real Triton

RATE_INTERVAL = "5s"
K8S_RULES = paths.ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"


def scrape_as_the_operator(prom: lp.Prometheus, servers: list) -> None:
    """Relabel ``prom``'s targets as the Prometheus Operator does for PodMonitor ``triton`` in namespace ``triton``
    (its promcfg.go: job = <namespace>/<PodMonitor name>), and reload."""
    namespace = mf.OPERATOR_JOB.split("/")[0]
    config = yaml.safe_load(prom.config_path.read_text())
    config["scrape_configs"] = [
        {
            "job_name": f"podMonitor/{mf.OPERATOR_JOB}/0",
            "static_configs": [
                {"targets": [lp.target_of(s)[0]], "labels": {"namespace": namespace, "pod": f"triton-{i}"}}
                for i, s in enumerate(servers)
            ],
            "relabel_configs": [{"target_label": "job", "replacement": mf.OPERATOR_JOB}],
        }
    ]
    prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    prom.reload()


@pytest.fixture(scope="module")
def stack():
    require_tool("prometheus", lp.INSTALL_HINT)
    dead = f"127.0.0.1:{process.free_port()}"
    k8s_rules = {"groups": yaml.safe_load(K8S_RULES.read_text())["spec"]["groups"]}
    with (
        triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo", "digits_classifier"]) as server,
        triton.start(paths.MODEL_REPOSITORY, models=[]) as empty,
        lp.start([server, empty, dead], scrape_interval=1.0, rule_files=mf.RULE_FILES) as prom,
        lp.start([], scrape_interval=1.0, rules=k8s_rules) as operator,
    ):
        scrape_as_the_operator(operator, [server, empty])
        prom.wait_for('up{job="triton"} == 1')
        operator.wait_for(f'count(up{{job="{mf.OPERATOR_JOB}"}} == 1) == 2')
        begin = time.time()
        send_drifted_digits(server)
        load = traffic.closed_loop(server, concurrency=2, duration=6, sizes=4096, error_rate=0.3, progress=False)
        time.sleep(1.5)
        end = time.time()
        gpu = "nv_gpu_utilization" in requests.get(server.metrics_url, timeout=5).text
        yield {
            "prom": prom,
            "operator": operator,
            "server": server,
            "begin": begin,
            "end": end,
            "load": load,
            "gpu": gpu,
            "dead": dead,
        }


def send_drifted_digits(server, passes: int = 2) -> None:
    """The held-out images shifted two pixels to the right, twice (900 images, over the rules' floor of 300)."""
    images, _ = train_digits.load_heldout()
    squares = images.reshape(-1, 8, 8)
    shifted = np.zeros_like(squares)
    shifted[:, :, 2:] = squares[:, :, :-2]
    client = traffic.make_client(server, "http")
    for chunk in np.array_split(np.tile(shifted.reshape(-1, 64), (passes, 1)), 10 * passes):
        tensor = httpclient.InferInput("IMAGES", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(chunk))
        client.infer("digits_classifier", inputs=[tensor])
    client.close()


def rule_model(name: str) -> str:
    """The model a rule is about: the quality rules read digits_classifier, the others metrics_demo."""
    quality = name.startswith(("model:digits_", "model_class:digits_", "Digits"))
    return "digits_classifier" if quality else "metrics_demo"


def test_traffic_had_errors_and_slow_requests(stack):
    load = stack["load"]
    assert (~load["ok"]).sum() > 0.1 * len(load)
    assert load[load["ok"]]["latency_s"].median() > 0.005


def test_targets(stack):
    health = stack["prom"].targets().set_index("instance")["health"]
    assert health[stack["dead"]] == "down"
    assert (health == "up").sum() == 2


def test_every_rule_loads_and_evaluates(stack):
    rules = stack["prom"].rules()
    shipped = {r.get("record") or r.get("alert") for r in mf.rules()}
    assert set(rules["name"]) == shipped
    assert (rules["health"] == "ok").all(), rules[rules["health"] != "ok"]


@pytest.mark.parametrize("record", [r["record"] for r in mf.recordings()])
def test_recording_rule_returns_data(stack, record):
    frame = stack["prom"].query(record)
    assert not frame.empty, f"{record}: no data"
    assert frame["value"].map(math.isfinite).any(), frame
    assert set(frame["model"]) == {rule_model(record)}


@pytest.mark.parametrize("alert", [a["alert"] for a in mf.alerts()])
def test_alert_condition_holds_and_the_alert_is_pending(stack, alert):
    """Each alert's expression returns data under its fault, and Prometheus holds the alert pending."""
    prom = stack["prom"]
    rule = next(a for a in mf.alerts() if a["alert"] == alert)
    if alert == "DemoLatencyP95High":
        p95 = prom.query("model:demo_request_duration_seconds:p95_5m")["value"].max()
        if not p95 > 0.025:  # a faster machine computes the largest input under the objective
            assert prom.query(rule["expr"]).empty
            pytest.skip(f"p95 was {p95 * 1e3:.1f} ms here, under the 25 ms objective: no fault to alert on")
    if alert.startswith("DemoLatencyBurnRate") and prom.query(rule["expr"]).empty:
        slow = prom.query("model:demo_request_duration_seconds:slow_ratio_rate5m")["value"].max()
        if not slow > 0.144:  # a faster machine computes most of the largest inputs within the 25 ms objective
            pytest.skip(f"{slow:.0%} of requests took over 25 ms here, under the pages' 14.4%: no fault to alert on")
    frame = prom.query(rule["expr"])
    assert not frame.empty, f"{alert}: its condition returned nothing under its fault"
    states = prom.alerts()
    mine = states[states["alertname"] == alert]
    assert not mine.empty, f"{alert} is not active:\n{states}"
    assert set(mine["state"]) == {"pending"}, "with `for:` of a minute or more it cannot fire yet"


# The Compose stack's Prometheus (job triton) and one scraping as the Prometheus Operator does (job triton/triton).
PROMETHEUSES = {"compose": ("prom", mf.COMPOSE_JOB), "operator": ("operator", mf.OPERATOR_JOB)}


# The model each dashboard is about: what its model variable must list (the server serves both).
DASHBOARD_MODELS = {"triton-custom-metrics.json": "metrics_demo", "digits-model-quality.json": "digits_classifier"}


@pytest.mark.parametrize("where", PROMETHEUSES)
@pytest.mark.parametrize("board", [p.name for p in mf.DASHBOARDS])
def test_dashboard_variable_queries(stack, where, board):
    """The job variable lists the Triton job of each Prometheus; the model variable, queried with it, the model."""
    key, job = PROMETHEUSES[where]
    variables = mf.variables(mf.dashboards()[board])
    label, match = mf.label_values_query(variables["job"])
    assert stack[key].api(f"label/{label}/values", **{"match[]": match}) == [job]
    label, match = mf.label_values_query(variables["model"])
    found = stack[key].api(f"label/{label}/values", **{"match[]": mf.concrete(match, job=job)})
    assert found == [DASHBOARD_MODELS[board]]


def run_panel_query(stack: dict, where: str, target: dict):
    """A panel query with the variables of ``where``, over the run (instant where the panel says so)."""
    key, job = PROMETHEUSES[where]
    expr = mf.concrete(target["expr"], RATE_INTERVAL, job=job)  # for the failure messages
    return expr, stack[key].panel_query(target, stack["begin"], stack["end"], RATE_INTERVAL, job=job)


def panel_cases():
    cases = []
    for name, panel, target in mf.panel_targets():
        for where in PROMETHEUSES:
            if where == "operator" and mf.recorded_in_compose_rules(target["expr"]):
                continue  # test_slo_rule_panels_need_the_compose_rules
            cases.append(pytest.param(panel, target, where, id=f"{where}:{name}:{panel['id']}:{target['refId']}"))
    return cases


@pytest.mark.parametrize(("panel", "target", "where"), panel_cases())
def test_dashboard_query_returns_data(stack, panel, target, where):
    expr, frame = run_panel_query(stack, where, target)
    if mf.needs_gpu(expr) and not stack["gpu"]:
        # The query API accepted it (a bad query raises PromQLError); no GPU, so no data.
        assert frame.empty
        pytest.skip(f"{panel['title']}: valid query, no data without an NVIDIA GPU (Triton exports no nv_gpu_*)")
    assert not frame.empty, f"{panel['title']} / {target['refId']}: {expr} returned nothing"
    assert frame["value"].map(math.isfinite).any(), f"{panel['title']}: only NaN/Inf\n{frame}"


QUALITY_PANELS = [(panel, alert) for _, panel, alert in mf.alert_panels() if alert["file"] == "quality.yml"]


@pytest.mark.parametrize(("panel", "alert"), QUALITY_PANELS, ids=[alert["alert"] for _, alert in QUALITY_PANELS])
def test_quality_panels_cross_their_red_line_on_drifted_images(stack, panel, alert):
    """The stack's digits traffic is drifted (shifted images): each quality panel goes past its alert's threshold,
    on the alerting side, as its alert does."""
    (target,) = panel["targets"]
    _, frame = run_panel_query(stack, "compose", target)
    direction, threshold = mf.alert_threshold(alert)
    worst = frame["value"].min() if direction == "<" else frame["value"].max()
    print(panel["title"], direction, threshold, "worst:", worst)
    assert (worst < threshold) if direction == "<" else (worst > threshold), f"{panel['title']}: {worst}"


def test_slo_rule_panels_need_the_compose_rules(stack):
    """The queries that read docker/prometheus/rules/ recording rules are those of the SLO panels, and a cluster
    without those rules has no data for them (deploy/kubernetes/README.md says so)."""
    needing = [
        (panel, target) for _, panel, target in mf.panel_targets() if mf.recorded_in_compose_rules(target["expr"])
    ]
    assert needing and all(panel["title"].startswith("SLO") for panel, _ in needing)
    for panel, target in needing:
        assert "docker/compose.yaml" in panel["description"] and "Kubernetes" in panel["description"]
        _, frame = run_panel_query(stack, "operator", target)
        assert frame.empty, f"{panel['title']} / {target['refId']}: data without the Compose rules?"
