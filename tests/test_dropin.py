"""The drop-in helper dropin/triton_metrics.py: its checks alone, then inside a real Triton."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from labkit import paths, scrape, traffic, triton

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


# ------------------------------------------------------------------ copies


def test_every_copy_is_identical_to_the_source():
    ignored = {".venv", "build", ".git", ".pytest_cache"}
    copies = [
        p
        for p in paths.ROOT.rglob("triton_metrics.py")
        if p != SOURCE and not ignored & set(p.relative_to(paths.ROOT).parts)
    ]
    in_repository = [p for p in copies if p.is_relative_to(paths.MODEL_REPOSITORY)]
    assert in_repository, "no model in model_repository/ uses the drop-in helper"
    source = SOURCE.read_bytes()
    stale = [str(p.relative_to(paths.ROOT)) for p in copies if p.read_bytes() != source]
    assert not stale, f"copies differ from dropin/triton_metrics.py (copy it again): {stale}"


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


# ------------------------------------------------------------------ inside a real Triton


@pytest.fixture(scope="module")
def probe_server():
    """A real Triton with the probe model and the repository's metrics_helper_demo."""
    repo = paths.scratch("test-dropin")
    shutil.copytree(PROBE, repo / "dropin_probe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(SOURCE, repo / "dropin_probe" / "1" / "triton_metrics.py")
    shutil.copytree(
        paths.MODEL_REPOSITORY / "metrics_helper_demo",
        repo / "metrics_helper_demo",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
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
        "negative": "counters only go up",
        "too_many_series": "already has 3 series",
    }
    assert set(errors) == set(expected)
    for case, text in expected.items():
        assert text in errors[case], f"{case}: {errors[case]!r}"


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
