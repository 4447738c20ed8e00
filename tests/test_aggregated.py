"""The aggregated histogram of dropin/triton_metrics.py on a real Triton (and a real Prometheus).

The model is notebook 06's ``every_request``: each request's time observed in a
native HISTOGRAM (a round trip per request) and in an aggregated one (counted in
the model, flushed every second as ``_bucket``/``_sum``/``_count`` counters).

- Prometheus scraping the same traffic reads the same quantiles from both.
- Unloading the model sends what the last interval recorded (``finalize``
  calls ``tm.close()``); the series stay, and a reload carries on from them.
- A model process that dies loses what it recorded since its last flush, and
  nothing before it: at most one interval.
- ``promtool check metrics`` flags the aggregated families, for what they are
  (counters with a histogram's names and an ``le`` label), and only them.
"""

from __future__ import annotations

import subprocess

import psutil
import pytest
import tritonclient.http as httpclient

from labkit import paths, repository, scrape, traffic, triton
from labkit import prometheus as lp
from tests.conftest import require_tool

pytestmark = pytest.mark.integration  # a real Triton (and a real Prometheus)

MODEL = "every_request"
SOURCE = paths.NOTEBOOKS / "best_practices" / "every_request.py"
AGGREGATED = "every_request_duration_seconds"
NATIVE = "every_native_request_duration_seconds"
QUANTILES = (0.5, 0.9, 0.99)
PROMTOOL_HINT = "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"


@pytest.fixture(scope="module")
def repo():
    built = paths.scratch("test-aggregated")
    repository.add_model(built, MODEL, SOURCE, paths.NOTEBOOKS / "best_practices" / "config.pbtxt")
    repository.add_helper(built / MODEL)
    return built


def send(server, requests: int, concurrency: int = 4) -> int:
    """``requests`` requests; returns how many succeeded (all must)."""
    run = traffic.closed_loop(server, concurrency=concurrency, requests=requests, model=MODEL, sizes=1, progress=False)
    assert run["ok"].all(), run[~run["ok"]].head()
    return len(run)


def counts(server) -> dict[str, float]:
    frame = scrape.scrape(server.metrics_url)
    return {
        "aggregated": scrape.value(frame, f"{AGGREGATED}_count", model=MODEL),
        "native": scrape.value(frame, f"{NATIVE}_count", model=MODEL),
        "requests_total": scrape.value(frame, "every_requests_total", model=MODEL),
    }


def stub_of(server) -> psutil.Process:
    """The model's Python process (its backend stub)."""
    found = [
        child
        for child in psutil.Process(server.pid).children(recursive=True)
        if f"/{MODEL}/" in " ".join(child.cmdline()[1:2])
    ]
    assert len(found) == 1, found
    return found[0]


def test_prometheus_reads_the_same_quantiles_from_both(repo):
    require_tool("prometheus", lp.INSTALL_HINT)
    with triton.start(repo, models=[MODEL]) as server, lp.start([server], scrape_interval=0.5) as prom:
        prom.wait_for('up{job="triton"} == 1')
        prom.wait_for_samples(f"{AGGREGATED}_count", count=2)  # a sample before the traffic: rate() sees it all
        sent = send(server, 1500)
        scrape.settle(lambda: counts(server), dict.fromkeys(["aggregated", "native", "requests_total"], float(sent)))
        for name in (AGGREGATED, NATIVE):
            prom.wait_for(f"sum({name}_count) == {sent}")
        rows = {}
        for q in QUANTILES:
            for name in (AGGREGATED, NATIVE):
                for shape in (f"sum by (le) ({name}_bucket)", f"sum by (le) (rate({name}_bucket[1m]))"):
                    frame = prom.query(f"histogram_quantile({q}, {shape})")
                    assert len(frame) == 1, frame
                    rows[(q, name, "rate" if "rate" in shape else "total")] = float(frame["value"].iloc[0])
    for q in QUANTILES:
        for kind in ("total", "rate"):
            assert rows[(q, AGGREGATED, kind)] == pytest.approx(rows[(q, NATIVE, kind)], rel=1e-9), (q, kind, rows)
    assert 0.0005 < rows[(0.5, AGGREGATED, "total")] < 0.0025  # a median near the model's 1 ms, not a NaN


def test_unload_sends_the_last_interval_and_a_reload_carries_on(repo):
    with triton.start(repo, models=[MODEL]) as server:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:
            first = send(server, 40)
            client.unload_model(MODEL)  # at once: the last flush interval has not passed
            # finalize() -> tm.close() sent it; the series stay on /metrics after the unload
            expected = dict.fromkeys(["aggregated", "native", "requests_total"], float(first))
            scrape.settle(lambda: counts(server), expected, timeout=20, what="counts after the unload")
            assert not client.is_model_ready(MODEL)
            client.load_model(MODEL)
            second = send(server, 25)
            expected = dict.fromkeys(["aggregated", "native", "requests_total"], float(first + second))
            scrape.settle(lambda: counts(server), expected, timeout=20, what="counts after the reload")
        finally:
            client.close()


def test_a_dead_model_process_loses_at_most_its_last_interval(repo):
    with triton.start(repo, models=[MODEL]) as server:
        flushed = send(server, 200)
        expected = dict.fromkeys(["aggregated", "native", "requests_total"], float(flushed))
        scrape.settle(lambda: counts(server), expected, timeout=20, what="the first requests, flushed")
        late = send(server, 30, concurrency=1)  # well inside one flush interval...
        stub_of(server).kill()  # ...and the model's process dies (SIGKILL: no finalize)
        # the native histogram got every request before its response left; Triton counted them all
        scrape.settle(lambda: counts(server)["native"], float(flushed + late), what="native count")
        scrape.settled_value(server.metrics_url, "nv_inference_count", flushed + late, model=MODEL)
        kept = counts(server)
        lost = flushed + late - kept["aggregated"]
        assert 0 <= lost <= late, kept  # only requests of the last interval: none from before it
        assert kept["requests_total"] == kept["aggregated"]  # both flushed together, lost together
        assert server.is_running()  # the server lives on; the model answers again once loaded again


def test_promtool_flags_the_aggregated_families_and_only_them(repo):
    promtool = require_tool("promtool", PROMTOOL_HINT)
    with triton.start(repo, models=[MODEL]) as server:
        sent = send(server, 20)
        scrape.settle(lambda: counts(server)["aggregated"], float(sent))
        text = scrape.fetch_text(server.metrics_url)
    prefixes = ("every_", "# HELP every_", "# TYPE every_")
    ours = "".join(line + "\n" for line in text.splitlines() if line.startswith(prefixes))
    assert f"# TYPE {AGGREGATED}_bucket counter" in ours and f"# TYPE {NATIVE} histogram" in ours
    done = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True)
    complaints = set((done.stdout + done.stderr).strip().splitlines())
    assert done.returncode != 0
    assert complaints == {
        f'{AGGREGATED}_bucket counter metrics should have "_total" suffix',
        f'{AGGREGATED}_bucket non-histogram metrics should not have "_bucket" suffix',
        f'{AGGREGATED}_bucket non-histogram metrics should not have "le" label',
        f'{AGGREGATED}_sum counter metrics should have "_total" suffix',
        f'{AGGREGATED}_sum non-histogram and non-summary metrics should not have "_sum" suffix',
        f'{AGGREGATED}_count counter metrics should have "_total" suffix',
        f'{AGGREGATED}_count non-histogram and non-summary metrics should not have "_count" suffix',
    }
    native = "".join(line + "\n" for line in ours.splitlines() if AGGREGATED not in line)
    assert subprocess.run([promtool, "check", "metrics"], input=native, capture_output=True, text=True).returncode == 0
