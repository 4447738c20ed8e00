"""Every pitfall of notebook 07, reproduced on a real tritonserver 2.51.0.

The model files are ``notebooks/pitfalls/*.py``, the ones the notebook loads.
They share one server in explicit model-control mode; each is loaded with the
HTTP repository API (``POST /v2/repository/models/<name>/load``), whose answer
carries Triton's error text.

Measured on this release: a metric call that the *server* refuses (``set`` on a
counter, a negative increment, ``value()`` on a histogram, ``observe`` on a
counter) fails the request, or, at random, aborts the whole server with
``boost::interprocess::lock_exception``. Those tests accept either outcome, and
fail on anything else (the call succeeding, another message, another crash).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from labkit import paths, process, promql, repository, scrape, traffic, triton

from .conftest import IN_CI

pytestmark = pytest.mark.integration

PITFALLS = paths.NOTEBOOKS / "pitfalls"
ABORT = "terminate called after throwing an instance of 'boost::interprocess::lock_exception'"

# model file -> the text Triton's load error must contain
LOAD_TIME = {
    "histogram_without_buckets": "Failed to create metric. Missing required buckets.",
    "unsorted_buckets": "Bucket Boundaries must be strictly sorted",
    "label_not_string": "attempt to access JSON non-string as string",
    "invalid_metric_name": "Invalid metric name",
    "name_taken_by_other_kind": "Family name already exists with different type",
}
# model file -> (the text of the failed request, can the server abort instead?)
REQUEST_TIME = {
    "family_deleted": ("Invalid metric operation as the corresponding 'MetricFamily' has been deleted", False),
    "histogram_value": ("TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Value", True),
    "counter_set": ("TRITONSERVER_METRIC_KIND_COUNTER does not support Set", True),
    "negative_increment": (
        "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values",
        True,
    ),
    "counter_observe": ("TRITONSERVER_METRIC_KIND_COUNTER does not support Observe", True),
}


def test_every_pitfall_file_is_covered():
    files = {p.stem for p in PITFALLS.glob("*.py")}
    silent_and_fixes = {"family_without_metric", "update_never_runs", "finalize_drops_metrics"}
    assert files == set(LOAD_TIME) | set(REQUEST_TIME) | silent_and_fixes


class SharedServer:
    """One explicit-mode server over the pitfall repository, started again after a pitfall kills it."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.server: triton.TritonServer | None = None

    def get(self) -> triton.TritonServer:
        if self.server is None or not self.server.is_running():
            self.stop()
            self.server = triton.start(self.repo, models=["metrics_demo"])
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pitfalls")
    for model_py in PITFALLS.glob("*.py"):
        repository.add_model(repo, model_py.stem, model_py, config=PITFALLS / "config.pbtxt")
    repository.copy_reference(repo)
    holder = SharedServer(repo)
    yield holder
    holder.stop()


def load(server: triton.TritonServer, name: str) -> tuple[int | None, str]:
    """Load a model with the repository API: (HTTP status, Triton's error), or (None, "") if the server died."""
    try:
        response = requests.post(f"{server.http_url}/v2/repository/models/{name}/load", timeout=120)
    except requests.ConnectionError:
        return None, ""
    return response.status_code, response.json().get("error", "") if response.text else ""


def infer_json(server: triton.TritonServer, model: str, values: list[float]) -> tuple[int | None, str]:
    """One JSON inference request: (HTTP status, error text), or (None, "") if the server died."""
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [len(values)], "data": values}]}
    try:
        # json.dumps writes NaN and Infinity as JSON extensions, which Triton reads
        response = requests.post(f"{server.http_url}/v2/models/{model}/infer", data=json.dumps(body), timeout=60)
    except requests.ConnectionError:
        return None, ""
    return response.status_code, response.json().get("error", "")


def model_ready(server: triton.TritonServer, name: str) -> bool:
    return requests.get(f"{server.http_url}/v2/models/{name}/ready", timeout=10).status_code == 200


def live(server: triton.TritonServer) -> bool:
    return requests.get(f"{server.http_url}/v2/health/live", timeout=10).status_code == 200


def assert_aborted(server: triton.TritonServer) -> None:
    process.wait_until(
        lambda: not server.is_running(),
        15,
        "the server to end (the request failed to connect, yet the server is still running)",
        interval=0.1,
    )
    log = server.log()
    assert ABORT in log and "Signal (6) received." in log, server.log_tail(30)


def survived(server: triton.TritonServer, follow_up) -> bool:
    """Run ``follow_up()`` (more requests after a refused call): True if they pass, False if the server aborted.

    Measured: the server sometimes aborts just *after* answering the refused call, at no fixed delay, so any
    follow-up request may find it gone. That outcome is accepted only as the known abort (``assert_aborted``);
    a follow-up that fails while the server is healthy fails the test.
    """
    try:
        follow_up()
    except requests.ConnectionError:
        assert_aborted(server)
        return False
    except AssertionError:
        if server.is_running() and ABORT not in server.log():
            raise
        assert_aborted(server)
        return False
    return True


@pytest.mark.parametrize("name", sorted(LOAD_TIME))
def test_load_time_pitfall_is_refused_with_its_message(shared, name):
    outcomes = []
    for _ in range(3):  # prefer to see the message; a server abort ends an attempt
        server = shared.get()
        status, error = load(server, name)
        if status is None:  # measured: 1 in 10 loads of label_not_string or invalid_metric_name
            assert_aborted(server)
            outcomes.append("aborted")
            continue
        assert status == 400, error
        assert f"load failed for model '{name}'" in error
        if LOAD_TIME[name] not in error and "Failed to process the request" in error:
            # seen once in CI on 2.51.0: the server's refusal arrived with its message lost ("message: \x01");
            # the model is refused all the same: load it again for the message
            outcomes.append("refused, message lost")
            continue
        assert LOAD_TIME[name] in error
        assert f"{name}/1/model.py" in error  # the traceback names the file and line

        def follow_up(server=server, name=name):
            assert not model_ready(server, name)
            # the other models still serve, but with strict readiness (the default) the *server* is no longer
            # ready: /v2/health/ready answers 400 until the failed model loads
            assert live(server) and not server.is_ready()
            assert infer_json(server, "metrics_demo", [1.0, 3.0]) == (200, "")
            index = requests.post(f"{server.http_url}/v2/repository/index", timeout=10).json()
            entry = next(e for e in index if e["name"] == name)
            assert entry["state"] == "UNAVAILABLE" and LOAD_TIME[name] in entry["reason"]

        if not survived(server, follow_up):
            outcomes.append("refused, then aborted")
            continue
        outcomes.append("refused")
        break
    print(f"{name}: {outcomes}")
    assert outcomes[-1] != "refused, message lost", outcomes


@pytest.mark.parametrize("name", sorted(REQUEST_TIME))
def test_request_time_pitfall_fails_the_request_or_aborts_the_server(shared, name):
    message, may_abort = REQUEST_TIME[name]
    outcomes = []
    for _ in range(3):  # prefer to see the message; a server abort ends an attempt
        server = shared.get()
        status, error = load(server, name)
        if status is not None:
            assert status == 200, error  # these models load fine
            status, error = infer_json(server, name, [1.0, 2.0, 4.0])
        if status is None:
            assert may_abort, f"{name} killed the server"
            assert_aborted(server)
            outcomes.append("aborted")
            continue
        assert status == 500
        assert message in error, error
        assert f"{name}/1/model.py" in error

        def follow_up(server=server, name=name):
            assert live(server) and model_ready(server, name)  # the model stays up

        if not survived(server, follow_up):
            assert may_abort, f"{name} killed the server"
            outcomes.append("failed, then aborted")
            continue
        outcomes.append("failed")
        break
    print(f"{name}: {outcomes}")


def test_family_without_metric_is_absent_until_its_first_metric(shared):
    server = shared.get()
    assert load(server, "family_without_metric")[0] == 200
    assert infer_json(server, "family_without_metric", [1.0, 2.0])[0] == 200
    text = requests.get(server.metrics_url, timeout=10).text
    assert "pitfall_lazy_errors_total" not in text  # no sample, no # HELP, no # TYPE
    assert infer_json(server, "family_without_metric", [float("nan")])[0] == 500
    frame = scrape.scrape(server.metrics_url)
    assert scrape.value(frame, "pitfall_lazy_errors_total") == 1


def test_update_in_a_path_that_never_runs(shared):
    server = shared.get()
    assert load(server, "update_never_runs")[0] == 200
    statuses = [infer_json(server, "update_never_runs", v)[0] for v in ([1.0], [float("nan")], [], [float("inf")])]
    assert statuses == [200, 500, 500, 500]
    frame = scrape.scrape(server.metrics_url)
    assert scrape.value(frame, "pitfall_silent_requests_total", outcome="success") == 1
    assert scrape.value(frame, "pitfall_silent_requests_total", outcome="error") == 0  # 3 errors, never counted


def test_metrics_switched_off(tmp_path):
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], metrics=False) as server:
        assert "--allow-metrics=false" in server.command
        # the model and its MetricFamily calls still work: they update nothing
        assert infer_json(server, "metrics_demo", [1.0, 3.0]) == (200, "")
        with pytest.raises(scrape.ScrapeError, match="could not reach " + server.metrics_url):
            scrape.scrape(server.metrics_url, timeout=2)
        assert "Started Metrics Service" not in server.log()


def test_metrics_address_bound_elsewhere():
    port = process.free_port()
    flags = [f"--metrics-port={port}", "--metrics-address=127.0.0.2"]
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], metrics_flags=flags) as server:
        assert f"Started Metrics Service at 127.0.0.2:{port}" in server.log()
        assert server.metrics_url == f"http://127.0.0.2:{port}/metrics"
        with pytest.raises(scrape.ScrapeError, match=f"could not reach http://127.0.0.1:{port}/metrics"):
            scrape.scrape(f"http://127.0.0.1:{port}/metrics", timeout=2)
        frame = scrape.scrape(f"http://127.0.0.2:{port}/metrics")
        assert "demo_requests_total" in set(frame["sample"])


def demo_lines(server: triton.TritonServer, prefix: str) -> list[str]:
    text = requests.get(server.metrics_url, timeout=10).text
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_reload_keeps_custom_counters_unless_finalize_drops_them(shared):
    server = shared.get()
    assert load(server, "finalize_drops_metrics")[0] == 200
    before = scrape.scrape(server.metrics_url)
    for model in ("metrics_demo", "finalize_drops_metrics"):
        for _ in range(4):
            assert infer_json(server, model, [1.0, 2.0])[0] == 200
    after = scrape.scrape(server.metrics_url)
    custom = scrape.value(after, "demo_requests_total", outcome="success")
    assert custom - scrape.value(before, "demo_requests_total", outcome="success") == 4
    assert scrape.value(after, "pitfall_finalized_requests_total") == 4
    for model in ("metrics_demo", "finalize_drops_metrics"):
        url = f"{server.http_url}/v2/repository/models/{model}/unload"
        assert requests.post(url, timeout=60).status_code == 200
    models = ("metrics_demo", "finalize_drops_metrics")
    process.wait_until(
        lambda: not any(model_ready(server, m) or unloading(server, m) for m in models), 30, "the models to unload"
    )
    # unloaded: Triton's own per-model series are gone, the reference model's custom series stay (stale)
    assert not demo_lines(server, 'nv_inference_request_success{model="metrics_demo"')
    assert not demo_lines(server, 'nv_inference_request_success{model="finalize_drops_metrics"')
    assert scrape.value(scrape.scrape(server.metrics_url), "demo_requests_total", outcome="success") == custom
    assert not demo_lines(server, "pitfall_finalized_requests_total")  # finalize removed it
    for model in ("metrics_demo", "finalize_drops_metrics"):
        assert load(server, model) == (200, "")
    reloaded = scrape.scrape(server.metrics_url)
    assert scrape.value(reloaded, "nv_inference_request_success", model="metrics_demo") == 0
    assert scrape.value(reloaded, "demo_requests_total", outcome="success") == custom  # carries on, no reset
    assert scrape.value(reloaded, "pitfall_finalized_requests_total") == 0  # starts again at 0


def unloading(server: triton.TritonServer, name: str) -> bool:
    index = requests.post(f"{server.http_url}/v2/repository/index", timeout=10).json()
    return any(e["name"] == name and e.get("state") == "UNLOADING" for e in index)


def test_restart_resets_counters_and_rate_copes():
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
    try:
        with scrape.Sampler(server.metrics_url, interval=0.2, keep="demo_requests") as sampler:
            first = traffic.closed_loop(server, concurrency=2, requests=60, sizes=16, progress=False)
            time.sleep(0.4)
            server.stop()
            time.sleep(0.4)  # the sampler records the outage as errors, not a crash
            server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], ports=server.ports)
            second = traffic.closed_loop(server, concurrency=2, requests=25, sizes=16, progress=False)
            time.sleep(0.4)
        assert sampler.errors and server.metrics_url in sampler.errors[0][1]
    finally:
        server.stop()
    frame = sampler.frame()
    series = promql.series(frame, "demo_requests_total", outcome="success").iloc[:, 0].dropna()
    assert series.max() == len(first) and series.iloc[-1] == len(second)  # back at 0, then 25
    assert (series.diff().dropna() < 0).any()  # a naive difference goes negative at the restart
    rates = promql.rate(frame, "demo_requests_total", window=1.0, outcome="success")["total"].dropna()
    assert not rates.empty and (rates >= 0).all()  # rate adds the drop back: never negative
    window = float(series.index[-1] - series.index[0]) + 0.5
    total = promql.increase(frame, "demo_requests_total", window=window, outcome="success")["total"].iloc[-1]
    # nothing lost across the reset (extrapolation only adds); the relative 1e-9 is float rounding of the
    # extrapolation factor (CI once computed 84.99999999999999 for 85 requests), far below one request
    assert total >= (len(first) + len(second)) * (1 - 1e-9)


# ---------------------------------------------------------------- numpy 2

NUMPY2 = "numpy==2.2.6"  # supports Python 3.10-3.13


def numpy2_environment() -> Path:
    """A venv (kept under build/) whose only package is numpy 2; the same one notebook 07 uses."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = paths.BUILD / f"numpy2-env-py{version}"
    if (target / "ready").exists():
        return target
    paths.BUILD.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=paths.BUILD))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staging)], check=True)
    site = staging / "lib" / f"python{version}" / "site-packages"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts", "--target", str(site), NUMPY2]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = f"could not install {NUMPY2} from PyPI: {done.stderr.strip()[-500:]}\nRun: {' '.join(pip)}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    (staging / "ready").touch()
    try:
        os.replace(staging, target)
    except OSError:  # a concurrent run finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def test_numpy2_in_the_stub_breaks_outputs_while_metrics_say_success():
    env_dir = numpy2_environment()
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], python_env=env_dir)
    try:
        for protocol in ("http", "grpc"):
            client = traffic.make_client(server, protocol)
            with pytest.raises(ValueError, match=r"cannot reshape array of size 0 into shape \(2,\)"):
                traffic.infer(client, np.array([1.0, 3.0], dtype=np.float32))
            client.close()
        status, error = infer_json(server, "metrics_demo", [1.0, 3.0])
        assert (status, error) == (500, "output tensor shape does not match size of output for 'OUTPUT0'")
        frame = scrape.scrape(server.metrics_url)
        assert scrape.value(frame, "demo_requests_total", outcome="success") == 3  # the model thinks all went well
        assert scrape.value(frame, "demo_requests_total", outcome="error") == 0
        # and so does Triton, which counts just after the response leaves: read again (bounded) until it has all 3
        scrape.settled_value(server.metrics_url, "nv_inference_request_success", 3, model="metrics_demo")
    finally:
        server.stop()
    assert np.__version__.startswith("1.")  # the course's own environment was not touched
