"""The drop-in helper dropin/triton_metrics.py: its checks alone, then inside a real Triton."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from labkit import paths, repository, scrape, traffic, triton

from .conftest import require_tool

SOURCE = paths.ROOT / "dropin" / "triton_metrics.py"
PROBE = Path(__file__).parent / "dropin_probe"
PROMTOOL_HINT = "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"


def load_helper():
    """A fresh copy of the helper module, imported outside Triton (no pb_utils)."""
    spec = importlib.util.spec_from_file_location("triton_metrics_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ one copy


def test_the_helper_exists_once_in_the_tree():
    """dropin/triton_metrics.py is the only copy; bench/ and scratch repositories get theirs when built."""
    ignored = {".venv", "build", ".git", ".pytest_cache"}
    copies = [
        str(p.relative_to(paths.ROOT))
        for p in paths.ROOT.rglob("triton_metrics.py")
        if not ignored & set(p.relative_to(paths.ROOT).parts)
    ]
    assert copies == ["dropin/triton_metrics.py"]
    assert paths.HELPER == SOURCE


def test_the_repository_model_imports_the_helper_in_place_and_in_docker():
    """metrics_helper_demo finds the helper at <repository>/../dropin: the checkout's dropin/, /dropin in Docker."""
    model_py = paths.MODEL_REPOSITORY / "metrics_helper_demo" / "1" / "model.py"
    assert not (model_py.parent / "triton_metrics.py").exists()
    assert 'parents[3] / "dropin"' in model_py.read_text()
    assert model_py.resolve().parents[3] / "dropin" == SOURCE.parent
    assert Path("/models/metrics_helper_demo/1/model.py").parents[3] / "dropin" == Path("/dropin")
    # every way the course serves model_repository/ in Docker mounts dropin/ at /dropin
    compose = yaml.safe_load((paths.ROOT / "docker" / "compose.yaml").read_text())
    volumes = compose["services"]["triton"]["volumes"]
    assert "../model_repository:/models:ro" in volumes and "../dropin:/dropin:ro" in volumes
    dry_run = subprocess.run(
        ["bash", str(paths.ROOT / "docker" / "run_triton.sh")],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    assert f"{SOURCE.parent}:/dropin:ro" in dry_run.stdout.split()
    command = triton.docker_command(paths.MODEL_REPOSITORY, triton.Ports(1, 2, 3), name="n")
    assert f"{SOURCE.parent}:/dropin:ro" in command


def test_a_copied_model_gets_its_own_copy(tmp_path):
    copied = repository.copy_reference(tmp_path, "metrics_helper_demo")
    assert (copied / "1" / "triton_metrics.py").read_bytes() == SOURCE.read_bytes()
    assert not (repository.copy_reference(tmp_path, "metrics_demo") / "1" / "triton_metrics.py").exists()


# ------------------------------------------------------------------ checks, outside Triton

GOOD = {
    "counter": ["app_requests_total", "_app_requests_total"],
    "gauge": ["app_inflight_requests", "app_queue_bytes", "app_temperature_celsius"],
    "histogram": ["app_request_duration_seconds", "app_batch_size"],
}
BAD = {
    "counter": [
        "app_requests",
        "app_latency_us_total",
        "appRequests_total",
        "app:requests_total",
        "2xx_total",
        "app-requests_total",
    ],
    "gauge": ["app_inflight_total", "app_queue_kb", "app_uptime_minutes", "app_latency_ms"],
    "histogram": ["app_latency_milliseconds", "app_request_duration_seconds_bucket", "requests_process_latency_ns"],
}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_names_pass(kind):
    tm = load_helper()
    for name in GOOD[kind]:
        assert tm.check_name(name, kind) == name


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_names_raise_and_say_why(kind):
    tm = load_helper()
    for name in BAD[kind]:
        with pytest.raises(ValueError, match=re.escape(repr(name))):
            tm.check_name(name, kind)


def test_conventions_can_be_switched_off_but_syntax_cannot():
    tm = load_helper()
    assert tm.check_name("app_latency_ms", "gauge", conventions=False) == "app_latency_ms"
    with pytest.raises(ValueError, match="must match"):
        tm.check_name("app-latency", "gauge", conventions=False)


def test_helper_agrees_with_promtool():
    """Each name the helper accepts passes `promtool check metrics`; each convention it enforces fails there."""
    promtool = require_tool("promtool", PROMTOOL_HINT)
    tm = load_helper()
    cases = [(kind, name) for table in (GOOD, BAD) for kind, names in table.items() for name in names]
    for kind, name in cases:
        if not tm._NAME.match(name) or name.endswith("_bucket"):
            continue  # not valid exposition text at all, or a histogram's own sample suffix
        try:
            tm.check_name(name, kind)
            helper_ok = True
        except ValueError:
            helper_ok = False
        sample = f"{name}_count 1\n{name}_sum 1\n" if kind == "histogram" else f"{name} 1\n"
        text = f"# HELP {name} x\n# TYPE {name} {kind}\n{sample}"
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        promtool_ok = result.returncode == 0
        assert helper_ok == promtool_ok, f"{kind} {name}: helper {helper_ok}, promtool {result.stdout}{result.stderr}"


def test_label_name_and_bucket_checks():
    tm = load_helper()
    assert tm.check_label_names(["outcome", "status_class"]) == ("outcome", "status_class")
    for names, message in [
        (["bad-label"], "invalid label name"),
        (["__name"], "reserved"),
        (["a", "a"], "twice"),
        ("outcome", "list of names"),
    ]:
        with pytest.raises(ValueError, match=message):
            tm.check_label_names(names)
    with pytest.raises(ValueError, match="'le' is reserved"):
        tm.check_label_names(["le"], "histogram")
    with pytest.raises(ValueError, match="default label"):
        tm.check_label_names(["model"], reserved=["model", "version"])
    assert tm.check_buckets([0.1, 1, float("inf")]) == [0.1, 1.0]
    for buckets, message in [([], "at least one"), ([1, 1], "strictly increasing"), ([float("nan")], "finite")]:
        with pytest.raises(ValueError, match=message):
            tm.check_buckets(buckets)


def test_outside_triton_metrics_need_init_then_triton():
    tm = load_helper()
    with pytest.raises(RuntimeError, match=r"init\(args\)"):
        tm.Counter("app_requests_total", "Requests")
    assert tm.init({"model_name": "m", "model_version": "3"}, region="eu") == {
        "model": "m",
        "version": "3",
        "region": "eu",
    }
    with pytest.raises(RuntimeError, match="inside a Triton Python-backend model"):
        tm.Counter("app_requests_total", "Requests")
    with pytest.raises(ValueError, match="must end in '_total'"):  # names are checked before Triton is needed
        tm.Counter("app_requests", "Requests")


# ------------------------------------------------------------------ with a stand-in for pb_utils


class FakeServer:
    """What the helper talks to, in place of Triton: refuses what 2.51.0 refuses, notices calls that overlap.

    Each call takes a few microseconds with the GIL released (as a real round trip does), so two threads
    calling at once without the helper's lock overlap here, where on Triton 2.51.0 they crashed the server.
    """

    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.overlaps = 0
        self.calls = 0
        self.refused: list[str] = []
        self.values: dict[tuple, float] = {}

    def call(self, what: str, action) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()
        try:
            time.sleep(2e-5)
            self.calls += 1
            action()
        finally:
            self.busy.release()

    def add(self, key: tuple, amount: float) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        """Sum over the series of ``name`` whose labels include ``labels``."""
        return sum(v for (n, series), v in self.values.items() if n == name and set(labels.items()) <= set(series))

    def module(self):
        """A stand-in for triton_python_backend_utils, bound to this server."""
        server = self

        class Metric:
            def __init__(self, family, labels, buckets) -> None:
                self.family, self.labels, self.buckets = family, labels, buckets
                self.key = frozenset(labels.items())

            def _refuse(self, what: str) -> None:
                server.refused.append(f"{what} on the {self.family.kind} {self.family.name}")

            def increment(self, amount: float) -> None:
                def action():
                    if self.family.kind == server.HISTOGRAM or (self.family.kind == server.COUNTER and amount < 0):
                        self._refuse(f"increment({amount})")
                    server.add((self.family.name, self.key), amount)

                server.call("increment", action)

            def set(self, value: float) -> None:
                def action():
                    if self.family.kind != server.GAUGE:
                        self._refuse("set()")
                    server.values[(self.family.name, self.key)] = value

                server.call("set", action)

            def observe(self, value: float) -> None:
                def action():
                    if self.family.kind != server.HISTOGRAM:
                        self._refuse("observe()")
                    name = self.family.name
                    server.add((f"{name}_count", self.key), 1)
                    server.add((f"{name}_sum", self.key), value)
                    for bound in [*self.buckets, math.inf]:
                        le = "+Inf" if bound == math.inf else f"{bound:.16g}"
                        server.add((f"{name}_bucket", self.key | {("le", le)}), float(value <= bound))

                server.call("observe", action)

            def value(self) -> float:
                if self.family.kind == server.HISTOGRAM:
                    self._refuse("value()")
                return server.values.get((self.family.name, self.key), 0.0)

        class MetricFamily:
            COUNTER, GAUGE, HISTOGRAM = server.COUNTER, server.GAUGE, server.HISTOGRAM

            def __init__(self, name, description, kind) -> None:
                self.name, self.kind = name, kind
                server.call("family", lambda: None)

            def Metric(self, labels, buckets=None):  # noqa: N802 (pb_utils' name)
                if any(not isinstance(v, str) for v in labels.values()):
                    server.refused.append(f"labels {labels}")
                return Metric(self, labels, buckets)

        return types.SimpleNamespace(MetricFamily=MetricFamily)


@pytest.fixture
def fake():
    """(the helper, loaded fresh, talking to a FakeServer; the server). The flush thread is stopped after."""
    tm = load_helper()
    server = FakeServer()
    tm.pb_utils = server.module()
    tm.init({"model_name": "m", "model_version": "1"}, flush_interval_s=3600)  # flushes only when told
    yield tm, server
    tm.close()
    assert server.refused == [], "the helper let a call through that Triton refuses"


BOUNDS = [0.001, 0.01, 0.1]


def test_aggregated_histogram_is_sent_as_a_native_one_would_be(fake):
    """Same observations, same buckets: the aggregated counters end where a native histogram's series do."""
    tm, server = fake
    native = tm.Histogram("native_seconds", "x", buckets=BOUNDS)
    aggregated = tm.Histogram("aggregated_seconds", "x", buckets=BOUNDS, aggregate=True)
    values = np.random.default_rng(12).lognormal(np.log(0.005), 1.5, size=500)
    values[:4] = [0.001, 0.01, 0.1, 0.0]  # on the edges: `le` means <=
    for sent, part in ((0, values[:300]), (300, values[300:])):
        before = server.calls
        for v in part:
            aggregated.observe(float(v))
        assert server.calls == before  # nothing reached the server yet
        assert server.value("aggregated_seconds_count") == sent
        for v in part:
            native.observe(float(v))
        tm.flush()
        for le in ["0.001", "0.01", "0.1", "+Inf"]:
            expected = server.value("native_seconds_bucket", le=le)
            assert server.value("aggregated_seconds_bucket", le=le, model="m", version="1") == expected
        assert server.value("aggregated_seconds_count") == server.value("native_seconds_count")
        assert server.value("aggregated_seconds_sum") == pytest.approx(server.value("native_seconds_sum"), rel=1e-12)
    assert server.value("aggregated_seconds_bucket", le="0.001") == int((values <= 0.001).sum())
    calls = server.calls
    tm.flush()
    assert server.calls == calls  # nothing new: nothing sent


def test_aggregated_counter_and_gather_add_up(fake):
    tm, server = fake
    summed = tm.Counter("summed_total", "x", ["outcome"], aggregate=True)
    for _ in range(7):
        summed.labels(outcome="ok").inc()
    summed.labels("error").inc(2.5)
    assert server.value("summed_total") == 0
    tm.flush()
    assert server.value("summed_total", outcome="ok") == 7 and server.value("summed_total", outcome="error") == 2.5


def test_the_flush_thread_sends_within_an_interval_and_close_sends_the_rest(fake):
    tm, server = fake
    latency = tm.Histogram("flushed_seconds", "x", buckets=BOUNDS, aggregate=True)
    tm.init({"model_name": "m", "model_version": "1"}, flush_interval_s=0.02)  # the thread's wait starts again
    thread = tm._flusher
    assert thread is not None and thread.is_alive()
    latency.observe(0.005)
    scrape.settle(lambda: server.value("flushed_seconds_count"), 1.0, timeout=10, what="flushed by the thread")
    tm.close()
    assert not thread.is_alive() and tm._flusher is None
    latency.observe(0.005)
    tm.close()  # again: nothing left to stop, the last observation is sent
    assert server.value("flushed_seconds_count") == 2


def hammer(tm, threads: int = 8, rounds: int = 200) -> list[str]:
    """``threads`` threads x ``rounds`` rounds of every kind of call; returns the errors they raised."""
    counter = tm.Counter("hammer_total", "x", ["kind"])
    gauge = tm.Gauge("hammer_level", "x")
    native = tm.Histogram("hammer_seconds", "x", buckets=BOUNDS)
    summed = tm.Counter("hammer_summed_total", "x", ["kind"], aggregate=True)
    aggregated = tm.Histogram("hammer_aggregated_seconds", "x", buckets=BOUNDS, aggregate=True)
    errors = []

    def work(index: int) -> None:
        try:
            for i in range(rounds):
                kind = f"k{(index + i) % 3}"
                with tm.gather():
                    counter.labels(kind=kind).inc()
                gauge.inc()
                gauge.dec()
                native.observe(0.005)
                summed.labels(kind=kind).inc()
                aggregated.observe(0.05)
                if i % 50 == 0:
                    tm.flush()
        except Exception as err:  # reported below
            errors.append(repr(err))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    tm.flush()
    return errors


def test_calls_from_many_threads_never_overlap_and_add_up_exactly(fake):
    tm, server = fake
    tm.init({"model_name": "m", "model_version": "1"}, flush_interval_s=0.001)  # the flush thread races too
    assert hammer(tm, threads=8, rounds=200) == []
    assert server.overlaps == 0
    total = 8 * 200
    assert server.value("hammer_total") == total and server.value("hammer_summed_total") == total
    assert server.value("hammer_seconds_count") == total and server.value("hammer_aggregated_seconds_count") == total
    assert server.value("hammer_aggregated_seconds_bucket", le="0.1") == total
    assert server.value("hammer_aggregated_seconds_bucket", le="0.01") == 0
    assert server.value("hammer_level") == 0


def test_the_overlap_check_catches_a_helper_without_its_lock(fake):
    """The check above can fail: with the lock replaced by a no-op, calls from threads overlap."""
    tm, server = fake
    tm.lock = contextlib.nullcontext()
    assert hammer(tm, threads=8, rounds=50) == []
    assert server.overlaps > 0


def test_bad_input_raises_at_the_call_and_reaches_nothing(fake):
    tm, server = fake
    counter = tm.Counter("bad_total", "x", ["kind"])
    gauge = tm.Gauge("bad_level", "x")
    native = tm.Histogram("bad_seconds", "x", buckets=BOUNDS)
    aggregated = tm.Histogram("bad_aggregated_seconds", "x", buckets=BOUNDS, aggregate=True)
    summed = tm.Counter("bad_summed_total", "x", aggregate=True)
    counter.labels(kind="a")
    calls = server.calls
    cases = [
        (lambda: counter.labels(kind="a").inc(-1), ValueError, "counters only go up"),
        (lambda: counter.labels(kind="a").inc("1"), TypeError, "takes a number"),
        (lambda: counter.labels(kind="a").inc(True), TypeError, "takes a number"),
        (lambda: counter.labels(kind="a").inc(math.inf), ValueError, "finite"),
        (lambda: counter.labels(kind=200), TypeError, "label values must be strings; kind=200 is a int"),
        (lambda: counter.labels(["a"]), TypeError, "label values must be strings"),
        (lambda: gauge.set(math.nan), ValueError, "finite"),
        (lambda: gauge.set(None), TypeError, "takes a number"),
        (lambda: native.observe("0.1"), TypeError, "takes a number"),
        (lambda: aggregated.observe(-0.001), ValueError, "_sum is a counter"),
        (lambda: aggregated.observe(math.nan), ValueError, "finite"),
        (lambda: summed.inc(-1), ValueError, "counters only go up"),
        (lambda: tm.Histogram("other_seconds", "x", buckets="fast"), ValueError, "list of upper bounds"),
        (lambda: tm.Histogram("other_seconds", "x", buckets=0.5), ValueError, "list of upper bounds"),
        (lambda: tm.Histogram("other_seconds", "x", buckets={0.1, 0.2}), ValueError, "list of upper bounds"),
        (lambda: tm.Histogram("other_seconds", "x", buckets=[0.1, "1"]), ValueError, "must be numbers"),
        (lambda: tm.Histogram("bad_seconds", "x", buckets=[0.5]), ValueError, "another definition"),
        (lambda: tm.Histogram("bad_seconds", "x", buckets=BOUNDS, aggregate=True), ValueError, "another definition"),
        (lambda: tm.Gauge("bad_aggregated_seconds_sum", "x", conventions=False), ValueError, "another definition"),
        (lambda: tm.Histogram("bad_aggregated_seconds", "x", buckets=BOUNDS), ValueError, "another definition"),
        (lambda: tm.Counter("other_total", "x", aggregate="yes"), TypeError, "True or False"),
        (lambda: tm.Gauge("other_level", "x", aggregate=True), TypeError, "aggregate"),
        (lambda: tm.init(None, region=3), TypeError, "label values must be strings"),
        (lambda: tm.init(None, flush_interval_s=0), ValueError, "flush_interval_s"),
    ]
    for make, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            make()
    assert server.calls == calls, "a bad call reached the server"
    assert tm._defaults == {"model": "m", "version": "1"}  # a refused init() changed nothing


# ------------------------------------------------------------------ inside a real Triton


@pytest.fixture(scope="module")
def probe_server():
    """A real Triton with the probe model and the repository's metrics_helper_demo."""
    repo = paths.scratch("test-dropin")
    shutil.copytree(PROBE, repo / "dropin_probe", ignore=shutil.ignore_patterns("__pycache__"))
    repository.add_helper(repo / "dropin_probe")
    repository.copy_reference(repo, "metrics_helper_demo")  # with a copy of the helper next to its model.py
    with triton.start(repo) as server:
        yield server


def scenario(server, name: str):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        tensor = httpclient.InferInput("SCENARIO", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([name.encode()], dtype=np.object_))
        return json.loads(client.infer("dropin_probe", [tensor]).as_numpy("RESULT")[0])
    finally:
        client.close()


@pytest.mark.integration
def test_in_triton_every_mistake_gets_a_clear_error(probe_server):
    errors = scenario(probe_server, "errors")
    expected = {
        "bad_name": "invalid metric name '2fast_total'",
        "no_total": "must end in '_total'",
        "ms_unit": "not 'ms'",
        "camel": "snake_case",
        "bad_label": "invalid label name 'bad-label'",
        "le_label": "'le' is reserved",
        "default_label": "'model' is already a default label",
        "label_string": "not the string 'outcome'",
        "buckets": "strictly increasing",
        "no_help": "needs a description",
        "redefined": "already exists with another definition",
        "wrong_labels": "missing ['kind'], unknown ['knd']",
        "labels_needed": "call .labels(...) first",
        "negative": "ValueError: inc() of a counter takes a number >= 0, got -1.0: counters only go up",
        "too_many_series": "already has 3 series",
        "label_value_int": "TypeError: probe_calls_total: label values must be strings; kind=200 is a int",
        "label_value_none": "TypeError: probe_calls_total: label values must be strings; kind=None",
        "default_label_value": "TypeError: default label region=3: label values must be strings",
        "inc_string": "TypeError: inc() of a counter takes a number, got '1' (str)",
        "inc_nan": "ValueError: inc() of a counter takes a finite number, got nan",
        "set_string": "TypeError: set() of a gauge takes a number, got 'high' (str)",
        "observe_nan": "ValueError: observe() takes a finite number, got nan",
        "observe_none": "TypeError: observe() takes a number, got None",
        "aggregated_negative": "ValueError: observe() of an aggregated histogram takes a number >= 0",
        "aggregated_inc_negative": "counters only go up",
        "bucket_layout_string": "ValueError: histogram buckets must be a list of upper bounds",
        "bucket_layout_number": "ValueError: histogram buckets must be a list of upper bounds",
        "bucket_layout_other": "already exists with another definition",
        "aggregate_other": "already exists with another definition",
        "aggregated_name_taken": "already exists with another definition",
    }
    assert set(errors) == set(expected)
    for case, text in expected.items():
        assert text in errors[case], f"{case}: {errors[case]!r}"
    # none of it reached the server: it is alive, and the model still answers
    assert probe_server.is_ready() and scenario(probe_server, "defaults")["region"] == "test"


@pytest.mark.integration
def test_in_triton_many_threads_call_at_once_and_every_call_counts(probe_server):
    """THREADS threads x CALLS rounds of every kind of call in one model, with the flush thread racing them.

    Unguarded, metric calls from several threads at once crashed Triton 2.51.0 (notebook 08, section 3).
    """
    labels = {"model": "dropin_probe", "version": "1", "region": "test"}
    url = probe_server.metrics_url
    before = scrape.scrape(url)
    result = scenario(probe_server, "threads")
    assert result["errors"] == []
    total = result["threads"] * result["calls"]

    def moved(frame, sample: str, **more: str) -> float:
        # select, not value: a series may not exist before its first call (then it was 0)
        now = scrape.select(frame, sample, **labels, **more)["value"].sum()
        return float(now - scrape.select(before, sample, **labels, **more)["value"].sum())

    def counts() -> dict[str, float]:
        frame = scrape.scrape(url)
        return {
            "immediate counter": sum(moved(frame, "probe_calls_total", kind=f"thread{i}") for i in range(3)),
            "aggregated counter": sum(moved(frame, "probe_summed_total", kind=f"thread{i}") for i in range(3)),
            "native histogram": moved(frame, "probe_duration_seconds_count"),
            "aggregated histogram": moved(frame, "probe_spread_seconds_count"),
            "aggregated <= 1 ms": moved(frame, "probe_spread_seconds_bucket", le="0.001"),
            "gauge": moved(frame, "probe_level"),
        }

    expected = dict.fromkeys(["immediate counter", "aggregated counter", "native histogram"], float(total))
    expected.update({"aggregated histogram": float(total), "aggregated <= 1 ms": total / 2, "gauge": 0.0})
    scrape.settle(counts, expected, timeout=10, what="every call of every thread")
    assert probe_server.is_running() and probe_server.is_ready()
    assert scenario(probe_server, "immediate") == {"moved": 3.0}  # and the model still works


@pytest.mark.integration
def test_in_triton_gather_sends_the_sum_once_at_the_end(probe_server):
    result = scenario(probe_server, "gather")
    assert result["inside"] == result["before"]  # nothing reached the server inside the block
    assert result["after"] == result["before"] + 8.5  # 5 x 1 + 2.5 + 1 (nested)
    assert scenario(probe_server, "immediate") == {"moved": 3.0}


@pytest.mark.integration
def test_in_triton_gauge_timer_and_default_labels(probe_server):
    labels = {"model": "dropin_probe", "version": "1", "region": "test"}
    before = scrape.scrape(probe_server.metrics_url)
    result = scenario(probe_server, "gauge_and_timer")
    assert result["inside"] == 14.0 and result["value"] == 13.0
    assert scenario(probe_server, "defaults") == labels
    frame = scrape.scrape(probe_server.metrics_url)
    timed = scrape.select(frame, "probe_duration_seconds_count", **labels)
    assert len(timed) == 1 and timed["value"].iloc[0] >= 1

    def moved(sample: str) -> float:
        # select, not value: the series may not exist before its first observation (then it was 0)
        after_value = scrape.select(frame, sample, **labels)["value"].sum()
        return float(after_value - scrape.select(before, sample, **labels)["value"].sum())

    # the timer observed, once, exactly the seconds it reported (however long the block took on this machine)
    assert result["elapsed_s"] > 0 and moved("probe_duration_seconds_count") == 1
    assert moved("probe_duration_seconds_sum") == pytest.approx(result["elapsed_s"], rel=1e-9)


@pytest.mark.integration
def test_in_triton_families_stay_alive(probe_server):
    result = scenario(probe_server, "families_alive")
    assert result["helper_value"] >= 1.0
    assert "'MetricFamily' has been deleted" in result["raw_error"]  # what the helper protects you from


@pytest.mark.integration
def test_repository_model_counts_exactly_and_passes_promtool(probe_server):
    before = scrape.scrape(probe_server.metrics_url)
    run = traffic.closed_loop(
        probe_server, concurrency=2, requests=60, error_rate=0.25, model="metrics_helper_demo", progress=False
    )
    after = scrape.scrape(probe_server.metrics_url)

    def moved(sample, **labels):
        return scrape.value(after, sample, **labels) - scrape.value(before, sample, **labels)

    ok = int(run["ok"].sum())
    assert moved("helper_requests_total", outcome="success", model="metrics_helper_demo", version="1") == ok
    assert moved("helper_requests_total", outcome="error") == len(run) - ok > 0
    assert moved("helper_request_duration_seconds_count") == ok
    assert scrape.value(after, "helper_inflight_requests") == 0
    client = traffic.make_client(probe_server, "http")
    x = np.array([0.0, 1.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(traffic.infer(client, x, model="metrics_helper_demo"), [4 / 3, 1.0, 5 / 3], rtol=1e-6)

    promtool = require_tool("promtool", PROMTOOL_HINT)
    text = scrape.fetch_text(probe_server.metrics_url)
    prefixes = ("helper_", "# HELP helper_", "# TYPE helper_")
    ours = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith(prefixes))
    assert "# TYPE helper_request_duration_seconds histogram" in ours
    result = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_a_bad_name_stops_the_model_loading_with_the_helpers_message(tmp_path):
    model = tmp_path / "repo" / "bad_names" / "1"
    model.mkdir(parents=True)
    shutil.copyfile(SOURCE, model / "triton_metrics.py")
    (model / "model.py").write_text(
        "import triton_metrics as tm\n\n\nclass TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        tm.init(args)\n"
        "        self.latency = tm.Histogram('app_latency_ms', 'Latency')\n\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
    config = (PROBE / "config.pbtxt").read_text().replace('name: "dropin_probe"', 'name: "bad_names"')
    (model.parent / "config.pbtxt").write_text(config)
    with pytest.raises(triton.TritonStartError) as info:
        triton.start(tmp_path / "repo")
    assert "app_latency_ms" in str(info.value) and "base units" in str(info.value)
