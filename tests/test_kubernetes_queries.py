"""The queries of deploy/kubernetes run for real: a local fleet of Triton servers behind one real Prometheus,
labelled the way a PodMonitor labels pods, answers every prometheus-adapter and HPA query, and loads and
evaluates the PrometheusRule."""

from __future__ import annotations

import math
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml

from labkit import paths, prometheus, repository, traffic, triton

from .conftest import require_tool

pytestmark = pytest.mark.integration

DEPLOY = paths.ROOT / "deploy" / "kubernetes"
NAMESPACE = "triton"
PODS = ["triton-0", "triton-1", "triton-2"]  # triton-2 serves metrics_demo WITHOUT the custom metrics
PLAIN_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """metrics_demo's interface with no custom metrics: what TritonCustomMetricsMissing must catch."""

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
'''


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def adapter_rules() -> list[dict]:
    return load("helm/prometheus-adapter-values.yaml")["rules"]["custom"]


def render(template: str, series: str, pods: list[str], namespace: str = NAMESPACE) -> str:
    """A prometheus-adapter metricsQuery as the adapter renders it for an HPA asking about ``pods``."""
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    query = template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
    query = query.replace("<<.GroupBy>>", "pod")
    assert "<<" not in query, f"unrendered placeholder in {query}"
    return query


def series_name(rule: dict) -> str:
    return re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: ``"1500m"`` -> 1.5, ``"200"`` -> 200."""
    return float(text[:-1]) / 1000 if str(text).endswith("m") else float(text)


JOB = f"{NAMESPACE}/triton"  # the Prometheus Operator's job label for PodMonitor "triton": <namespace>/<name>


def label_targets(prom: prometheus.Prometheus, servers: list, pods: list[str]) -> None:
    """Scrape each server with the namespace, pod and job labels a PodMonitor would give it, and reload."""
    config = yaml.safe_load(prom.config_path.read_text())
    config["scrape_configs"] = [
        {
            "job_name": f"podMonitor/{JOB}/0",  # the operator's scrape config name; the job label comes next
            "static_configs": [
                {"targets": [prometheus.target_of(s)[0]], "labels": {"namespace": NAMESPACE, "pod": pod}}
                for s, pod in zip(servers, pods, strict=True)
            ],
            "relabel_configs": [{"target_label": "job", "replacement": JOB}],
        }
    ]
    prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    prom.reload()


@pytest.fixture(scope="module")
def fleet():
    require_tool("prometheus", prometheus.INSTALL_HINT)
    plain = paths.scratch("test-k8s-plain")
    model_py = plain / "model.py"
    model_py.write_text(PLAIN_MODEL)
    repository.add_model(plain, "metrics_demo", model_py)
    repos = [paths.MODEL_REPOSITORY, paths.MODEL_REPOSITORY, plain]
    servers: list = []
    prom = None
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(triton.start, repo, models=["metrics_demo"]) for repo in repos]
            for future in futures:
                servers.append(future.result())
        rules = {"groups": load("prometheusrule.yaml")["spec"]["groups"]}
        prom = prometheus.start([], scrape_interval=1.0, rules=rules)
        label_targets(prom, servers, PODS)
        prom.wait_for_samples('up{namespace="triton"}', count=2, timeout=30)
        with ThreadPoolExecutor(3) as pool:
            runs = [
                pool.submit(traffic.closed_loop, servers[0], concurrency=3, duration=6, error_rate=0.1, progress=False),
                pool.submit(traffic.open_loop, servers[1], rate=30, duration=6, progress=False),
                pool.submit(traffic.open_loop, servers[2], rate=10, duration=6, progress=False),
            ]
            for run in runs:
                assert len(run.result()) > 0
        time.sleep(2.5)  # the last scrapes and rule evaluations
        yield servers, prom
    finally:
        if prom is not None:
            prom.stop()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.stop(), servers))


def test_targets_carry_pod_labels(fleet):
    _, prom = fleet
    up = prom.query('up{namespace="triton"}')
    assert sorted(up["pod"]) == PODS and (up["value"] == 1).all()
    assert set(up["job"]) == {JOB}


@pytest.mark.parametrize("rule", adapter_rules(), ids=lambda r: r["name"]["as"])
def test_adapter_series_query_finds_the_pods_with_custom_metrics(fleet, rule):
    _, prom = fleet
    found = prom.api("series", **{"match[]": rule["seriesQuery"]})
    assert {s["pod"] for s in found} == {"triton-0", "triton-1"}  # not triton-2: it has no custom metrics
    assert {s["__name__"] for s in found} == {series_name(rule)}


@pytest.mark.parametrize("rule", adapter_rules(), ids=lambda r: r["name"]["as"])
def test_adapter_metrics_query_returns_a_value_per_pod(fleet, rule):
    _, prom = fleet
    at = time.time()
    result = prom.query(render(rule["metricsQuery"], series_name(rule), PODS), at=at)
    values = dict(zip(result["pod"], result["value"], strict=True))
    print(rule["name"]["as"], values)
    assert set(values) == {"triton-0", "triton-1"}
    assert all(math.isfinite(v) and v > 0 for v in values.values())
    # each pod's value is that pod's own, not another's or a sum over pods: the query asked about one pod
    # alone, at the same instant, gives exactly the same number
    for pod, value in values.items():
        alone = prom.query(render(rule["metricsQuery"], series_name(rule), [pod]), at=at)
        assert alone["pod"].tolist() == [pod] and alone["value"].tolist() == pytest.approx([value], rel=1e-12)


def test_hpa_metrics_give_a_replica_count(fleet):
    """What the HPA computes from the adapter: ceil(replicas * average per pod / target), per metric, then the max."""
    _, prom = fleet
    hpa = load("hpa.yaml")["spec"]
    rules = {r["name"]["as"]: r for r in adapter_rules()}
    pods = ["triton-0", "triton-1"]
    proposals = {}
    for metric in hpa["metrics"]:
        name = metric["pods"]["metric"]["name"]
        result = prom.query(render(rules[name]["metricsQuery"], series_name(rules[name]), pods))
        assert sorted(result["pod"]) == pods
        average = result["value"].mean()
        target = quantity(metric["pods"]["target"]["averageValue"])
        proposals[name] = math.ceil(len(pods) * average / target)
    desired = min(max(max(proposals.values()), hpa["minReplicas"]), hpa["maxReplicas"])
    print("HPA proposals:", proposals, "-> desired replicas:", desired)
    assert hpa["minReplicas"] <= desired <= hpa["maxReplicas"]


def test_prometheusrule_loads_and_records(fleet):
    _, prom = fleet
    loaded = prom.rules()
    shipped = [r for g in load("prometheusrule.yaml")["spec"]["groups"] for r in g["rules"]]
    assert len(loaded) == len(shipped) and (loaded["health"] == "ok").all(), loaded
    per_pod = prom.query("namespace_pod:demo_requests:rate1m")
    assert sorted(per_pod["pod"]) == ["triton-0", "triton-1"]
    rate = prom.query("namespace:demo_requests:rate5m")
    assert len(rate) == 1 and rate["value"].iloc[0] > 0.1  # above the error-ratio alert's traffic floor
    errors = prom.query("namespace:demo_requests:error_ratio_rate5m")
    assert len(errors) == 1 and 0 < errors["value"].iloc[0] < 0.2  # 10% errors on one pod's traffic
    p99 = prom.query("namespace:demo_request_duration_seconds:p99_rate5m")
    assert len(p99) == 1 and 0 < p99["value"].iloc[0] <= 0.5  # a quantile within the buckets (0.5 s: the last bound)
    busy = prom.query("namespace_pod:demo_request_duration_seconds_sum:rate1m")
    assert sorted(busy["pod"]) == ["triton-0", "triton-1"]


def test_missing_custom_metrics_alert_points_at_the_plain_pod(fleet):
    _, prom = fleet
    rule = next(
        r
        for g in load("prometheusrule.yaml")["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "TritonCustomMetricsMissing"
    )
    found = prom.query(rule["expr"])
    assert list(found["pod"]) == ["triton-2"]
    alerts = prom.alerts()
    pending = alerts[alerts["alertname"] == "TritonCustomMetricsMissing"]
    assert list(pending["pod"]) == ["triton-2"] and set(pending["state"]) == {"pending"}  # for: 10m
    assert requests.get(f"{prom.url}/-/ready", timeout=5).status_code == 200
