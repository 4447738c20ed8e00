"""labkit.prometheus: config, errors, and a real Prometheus scraping a small exporter we control."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import start_wsgi_server

from labkit import process, promql
from labkit import prometheus as lp
from tests import conftest
from tests.conftest import require_tool


def need_prometheus() -> None:
    require_tool("prometheus", lp.INSTALL_HINT)


# --------------------------------------------------------------------------- no server


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "1s"), (0.5, "500ms"), (300, "5m"), (90, "90s"), (3600, "1h"), (1.25, "1250ms")]
)
def test_duration(seconds, text):
    assert lp.duration(seconds) == text


def test_duration_rejects_zero():
    with pytest.raises(ValueError):
        lp.duration(0)


class FakeServer:
    metrics_url = "http://127.0.0.1:8123/metrics"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (FakeServer(), ("127.0.0.1:8123", "/metrics")),
        ("http://127.0.0.1:9/custom/path", ("127.0.0.1:9", "/custom/path")),
        ("127.0.0.1:4000", ("127.0.0.1:4000", "/metrics")),
    ],
)
def test_target_of(target, expected):
    assert lp.target_of(target) == expected


def test_make_config_is_valid_for_promtool(tmp_path):
    promtool = require_tool("promtool", lp.INSTALL_HINT)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "a:b:c", "expr": "up"}]}]}))
    config = lp.make_config(
        [FakeServer(), "127.0.0.1:9/other"], scrape_interval=0.5, evaluation_interval=2, rule_files=[rules]
    )
    assert config["global"] == {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "2s"}
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert len(jobs) == 2, "one scrape config per metrics path, with distinct job names"
    assert config["rule_files"] == [str(rules.resolve())]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(lp.PrometheusNotFoundError) as err:
        lp.start(["127.0.0.1:9"])
    message = str(err.value)
    compose = "docker compose -p triton-metrics -f docker/compose.yaml up"
    for fix in ("apt-get install prometheus", "brew install prometheus", compose):
        assert fix in message
    with pytest.raises(lp.PrometheusNotFoundError, match="promtool"):
        lp.promtool("--version")


def test_missing_binary_fails_in_ci_and_skips_elsewhere(monkeypatch):
    """The tests' rule for Prometheus: skip with the install command, but fail when CI=true."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus"):
        need_prometheus()
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="brew install prometheus"):
        need_prometheus()


def test_result_frame_shapes():
    vector = {"resultType": "vector", "result": [{"metric": {"__name__": "x", "a": "1"}, "value": [10.5, "NaN"]}]}
    frame = lp.result_frame(vector)
    assert list(frame.columns) == ["__name__", "a", "time", "value"]
    assert math.isnan(frame["value"].iloc[0])
    matrix = {"resultType": "matrix", "result": [{"metric": {"b": "2"}, "values": [[1, "1"], [2, "+Inf"]]}]}
    frame = lp.result_frame(matrix)
    assert frame["value"].tolist() == [1.0, math.inf] and frame["time"].tolist() == [1.0, 2.0]
    assert lp.result_frame({"resultType": "scalar", "result": [3, "4"]})["value"].tolist() == [4.0]
    assert list(lp.result_frame({"resultType": "vector", "result": []}).columns) == ["time", "value"]


# ------------------------------------------------------------------ a real Prometheus


@pytest.fixture(scope="module")
def exporter():
    """A tiny /metrics endpoint whose counter and gauge the tests set."""
    registry = CollectorRegistry()
    counter = Counter("fake_requests", "requests", ["outcome"], registry=registry)
    gauge = Gauge("fake_inflight", "in flight", registry=registry)
    counter.labels("success").inc(0)
    port = process.free_port()
    httpd, thread = start_wsgi_server(port, addr="127.0.0.1", registry=registry)
    yield {"url": f"http://127.0.0.1:{port}/metrics", "counter": counter, "gauge": gauge}
    httpd.shutdown()
    thread.join()


RULES = {
    "groups": [
        {
            "name": "fake",
            "rules": [
                {"record": "job:fake_requests:rate5s", "expr": "sum by (job) (rate(fake_requests_total[5s]))"},
                {"alert": "FakeInflightHigh", "expr": "fake_inflight > 5", "for": "1s", "labels": {"severity": "t"}},
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def prom(exporter):
    need_prometheus()
    with lp.start([exporter["url"]], scrape_interval=0.5, evaluation_interval=0.5, rules=RULES) as handle:
        handle.wait_for_samples("up", 2)
        yield handle


@pytest.mark.integration
def test_listens_on_loopback_and_scrapes(prom, exporter):
    assert prom.url.startswith("http://127.0.0.1:")
    listening = {c.laddr for c in psutil.Process(prom.pid).net_connections(kind="tcp") if c.status == "LISTEN"}
    assert all(addr.ip == "127.0.0.1" for addr in listening), listening
    assert ("127.0.0.1", prom.port) in {(a.ip, a.port) for a in listening}
    targets = prom.targets()
    assert targets["health"].tolist() == ["up"] and targets["job"].tolist() == [lp.JOB]
    assert prom.config_path.exists() and "scrape_interval: 500ms" in prom.config_path.read_text()


@pytest.mark.integration
def test_query_and_query_range(prom, exporter):
    exporter["counter"].labels("success").inc(42)
    exporter["gauge"].set(3)
    query = 'fake_requests_total{outcome="success"}'
    process.wait_until(
        lambda: prom.query(query)["value"].tolist() == [42.0],
        10,
        lambda: f"{query} to read 42 (it reads {prom.query(query)['value'].tolist()})",
    )
    now = prom.query(query)
    assert now["value"].tolist() == [42.0]
    assert now["job"].tolist() == [lp.JOB] and now["__name__"].tolist() == ["fake_requests_total"]
    end = time.time()
    history = prom.query_range("fake_inflight", end - 3, end, step=0.5)
    assert set(history.columns) >= {"__name__", "instance", "job", "time", "value"}
    assert history["time"].diff().dropna().round(3).eq(0.5).all()
    assert history["value"].iloc[-1] == 3.0


@pytest.mark.integration
def test_raw_samples_feed_labkit_promql_exactly(prom, exporter):
    """labkit.promql on the samples Prometheus stored gives Prometheus' own rate, to float precision."""
    for _ in range(8):
        exporter["counter"].labels("success").inc(7)
        time.sleep(0.3)
    end = round(time.time(), 3)
    raw = prom.raw_samples("fake_requests_total", end - 20, end)
    assert {"time", "family", "type", "sample", "instance", "job", "outcome", "value"} <= set(raw.columns)
    at = [end - 1.5, end - 1.0, end - 0.5, end]
    ours = promql.rate(raw, "fake_requests_total", 4.0, at=at)["total"]
    theirs = prom.query_range("sum(rate(fake_requests_total[4s]))", at[0], at[-1], 0.5).set_index("time")["value"]
    assert len(theirs) == 4
    assert ours.to_numpy() == pytest.approx(theirs.to_numpy(), rel=1e-12)


@pytest.mark.integration
def test_rules_and_alerts(prom, exporter):
    rules = prom.rules()
    assert set(rules["name"]) == {"job:fake_requests:rate5s", "FakeInflightHigh"}
    assert (rules["health"] != "err").all(), rules
    exporter["gauge"].set(9)
    process.wait_until(
        lambda: "firing" in set(prom.alerts()["state"]), 15, lambda: f"an alert to fire; alerts:\n{prom.alerts()}"
    )
    assert not prom.query("job:fake_requests:rate5s").empty
    exporter["gauge"].set(0)


@pytest.mark.integration
def test_set_rules_reloads_without_restart(prom):
    pid = prom.pid
    extra = {"name": "extra", "rules": [{"record": "job:up:sum", "expr": "sum by (job) (up)"}]}
    prom.set_rules({"groups": [*RULES["groups"], extra]})
    assert "job:up:sum" in set(prom.rules()["name"]) and prom.pid == pid
    assert not prom.wait_for("job:up:sum", timeout=10).empty
    broken = {"groups": [{"name": "bad", "rules": [{"record": "x", "expr": "rate(up[5s)"}]}]}
    with pytest.raises(lp.PrometheusReloadError, match="parse error"):
        prom.set_rules(broken)
    assert "job:up:sum" in set(prom.rules()["name"]), "a refused reload keeps the old rules"
    prom.set_rules(RULES)
    assert set(prom.rules()["name"]) == {"job:fake_requests:rate5s", "FakeInflightHigh"}


@pytest.mark.integration
def test_bad_query_raises_promql_error(prom):
    with pytest.raises(lp.PromQLError, match="parse error"):
        prom.query("rate(fake_requests_total[5s)")
    with pytest.raises(lp.PromQLError):
        prom.query("histogram_quantile(0.5)")


@pytest.mark.integration
def test_bad_config_raises_with_log(tmp_path):
    need_prometheus()
    bad = {"groups": [{"name": "g", "rules": [{"record": "x", "expr": "rate(up[5s)"}]}]}
    with pytest.raises(lp.PrometheusStartError, match="parse error"):
        lp.start(["127.0.0.1:9"], rules=bad, timeout=15)


@pytest.mark.integration
def test_a_port_taken_between_pick_and_start_is_picked_again(monkeypatch, exporter):
    need_prometheus()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    picks: list[int] = []

    def pick() -> int:  # the first start is given the taken port, the second a free one
        picks.append(taken if not picks else process.free_port())
        return picks[-1]

    monkeypatch.setattr(lp, "free_port", pick)
    try:
        with lp.start([exporter["url"]]) as handle:
            assert handle.port == picks[-1] != taken
            assert handle.is_ready()
    finally:
        holder.close()
    assert len(picks) == 2


@pytest.mark.integration
def test_stop_leaves_nothing_behind(exporter):
    need_prometheus()
    handle = lp.start([exporter["url"]])
    pid, workdir = handle.pid, handle.workdir
    assert psutil.pid_exists(pid) and workdir.exists()
    handle.stop()
    handle.stop()  # twice is fine
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not workdir.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{handle.url}/-/ready", timeout=2)
    assert "Starting Prometheus" in handle.log()


@pytest.mark.integration
def test_no_orphan_when_the_parent_is_killed(tmp_path):
    need_prometheus()
    pid_file = tmp_path / "pid"
    code = (
        "import sys, time, labkit.prometheus as lp\n"
        "p = lp.start(['127.0.0.1:9'])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{p.pid}} {{p.workdir}}')\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})

    def started() -> bool:
        assert parent.poll() is None, "the child never started Prometheus"
        return pid_file.exists() and bool(pid_file.read_text())

    process.wait_until(started, 30, "the child to start Prometheus (it never did)", interval=0.1)
    pid, *folders = pid_file.read_text().split()
    pid = int(pid)
    assert psutil.pid_exists(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        process.wait_until(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
            20,
            f"prometheus {pid} to end (it outlived the Python that started it)",
            interval=0.1,
        )
    finally:
        for folder in folders:  # a killed Python cannot remove its temp folders: do it for it
            shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------- histogram_quantile edge cases


def buckets_expr(q: float, buckets: dict) -> str:
    """A PromQL expression that builds the bucket vector from literals (no data needed)."""
    parts = [f'label_replace(vector({count}), "le", "{le}", "", "")' for le, count in buckets.items()]
    return f"histogram_quantile({q}, {' or '.join(parts)})"


QUANTILE_CASES = [
    (0.5, {"0.1": 10, "0.2": 20, "+Inf": 20}),
    (0.75, {"0.1": 10, "0.2": 20, "+Inf": 20}),
    (0.25, {"0.1": 10, "0.2": 20, "+Inf": 20}),
    (1.0, {"0.1": 10, "0.2": 20, "+Inf": 20}),
    (0.0, {"0.1": 5, "0.2": 20, "+Inf": 20}),
    (0.0, {"0.1": 0, "0.2": 20, "+Inf": 20}),
    (0.9, {"0.1": 10, "0.2": 20, "+Inf": 30}),
    (0.5, {"0.1": 10, "0.2": 8, "+Inf": 20}),
    (0.5, {"-1": 10, "0.2": 18, "+Inf": 20}),
    (0.99, {"0.0005": 3, "0.001": 7, "0.0025": 7, "0.005": 19, "0.5": 21, "+Inf": 21}),
    (0.5, {"0.1": 5, "0.2": 9}),
    (0.5, {"+Inf": 4}),
    (0.5, {"0.1": 0, "+Inf": 0}),
    (-0.5, {"0.1": 1, "+Inf": 1}),
    (1.5, {"0.1": 1, "+Inf": 1}),
]


@pytest.mark.integration
def test_histogram_quantile_matches_prometheus(prom):
    for q, buckets in QUANTILE_CASES:
        frame = prom.query(buckets_expr(q, buckets))
        theirs = frame["value"].iloc[0] if len(frame) else math.nan
        ours = promql.histogram_quantile(q, buckets)
        assert ours == pytest.approx(theirs, rel=1e-12, nan_ok=True), (q, buckets)
