"""bench/: the repository it builds, its variants on a real Triton, and a tiny run of `python -m bench`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench import run as bench
from bench.load import LoadGenerator
from labkit import paths, scrape, triton


def test_build_repository_sets_each_variant(tmp_path):
    repo = bench.build_repository(tmp_path, ["none", "naive"], work_us=(0, 500))
    names = sorted(p.name for p in repo.iterdir())
    assert names == ["bench_naive", "bench_naive_500us", "bench_none", "bench_none_500us", "call_cost"]
    config = (repo / "bench_naive_500us" / "config.pbtxt").read_text()
    assert 'name: "bench_naive_500us"' in config
    assert 'string_value: "naive"' in config and 'string_value: "500"' in config
    assert (repo / "bench_naive" / "1" / "triton_metrics.py").exists()
    with pytest.raises(ValueError, match="unknown variant"):
        bench.build_repository(tmp_path / "x", ["fancy"])


def must_equal(variant: str) -> list[tuple[str, str]]:
    """(the variant's own count, Triton's count) pairs: per request (naive, thread) or per execute call."""
    if variant in ("naive", "thread"):
        histogram = ("bench_request_duration_seconds_count", "nv_inference_count")
    else:
        histogram = ("bench_execute_duration_seconds_count", "nv_inference_exec_count")
    return [("bench_requests_total", "nv_inference_count"), histogram]


@pytest.mark.integration
def test_variants_make_the_calls_they_claim(tmp_path):
    """Per request (naive, thread) the histogram counts requests; per execute (recommended, helper), executes."""
    repo = bench.build_repository(tmp_path, bench.VARIANTS)
    with triton.start(repo) as server, LoadGenerator(processes=1, concurrency=8) as load:
        for variant in bench.VARIANTS:
            load.run(server.grpc_url, bench.model_name(variant), seconds=0.3, warmup=0.1)
        frames = []

        def gaps() -> dict[str, float]:
            """Per variant, each of its own counts minus the count of Triton's that it must equal."""
            frames.append(scrape.scrape(server.metrics_url))
            return {
                f"{variant}: {ours} - {theirs}": scrape.value(frames[-1], ours, model=bench.model_name(variant))
                - scrape.value(frames[-1], theirs, model=bench.model_name(variant))
                for variant in bench.VARIANTS
                if variant != "none"  # it has no counts of its own
                for ours, theirs in must_equal(variant)
            }

        # Triton counts just after the responses leave, and the thread variant's background thread may still be
        # catching up: read again (bounded) until every variant's counts equal Triton's exactly
        scrape.settle(gaps, dict.fromkeys(gaps(), 0.0), timeout=20, what="each variant's counts minus Triton's")
        frame = frames[-1]
        seconds = bench.call_seconds(server, 20)
    for variant in bench.VARIANTS:
        model = bench.model_name(variant)
        assert scrape.value(frame, "nv_inference_count", model=model) > 0
        if variant == "none":
            assert scrape.select(frame, "bench_requests_total", model=model).empty
    assert list(seconds.columns) == list(bench.KINDS) and len(seconds) == 20
    assert (seconds.to_numpy() > 0).all()


@pytest.mark.integration
def test_python_m_bench_prints_a_table_then_json():
    command = [sys.executable, "-m", "bench", "--cycles", "1", "--seconds", "0.3", "--warmup", "0.1"]
    command += ["--calls", "50", "--processes", "1", "--concurrency", "4", "--quiet"]
    done = subprocess.run(command, cwd=paths.ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert "Per-call cost" in done.stdout and "metric calls" in done.stdout
    assert set(result["per_call_us"]) >= {"increment", "set", "observe"}
    assert set(result["throughput_ratio"]) >= {"naive", "recommended"}
    assert result["uninstrumented_rps"] > 0
    assert all(np.isfinite(v) and v > 0 for v in result["throughput_ratio"].values())
    # a metric call is a round trip to the server process: far dearer than reading the clock
    for kind in ("increment", "set", "observe"):
        assert result["per_call_us"][kind] > 5 * result["per_call_us"]["perf_counter"]
