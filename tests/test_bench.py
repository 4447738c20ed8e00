"""bench/: the repository it builds, its variants on a real Triton, and a tiny run of `python -m bench`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
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
    # every variant runs at the same batch size: the batcher waits for a full batch
    assert re.search(r"^max_batch_size: 8$", config, re.MULTILINE) and "preferred_batch_size: [ 8 ]" in config
    # the helper is kept once, in dropin/; each model gets its copy when the repository is built
    assert not (paths.ROOT / "bench" / "models" / "bench_model" / "1" / "triton_metrics.py").exists()
    assert (repo / "bench_naive" / "1" / "triton_metrics.py").read_bytes() == paths.HELPER.read_bytes()
    other = bench.build_repository(tmp_path / "b4", ["aggregated"], batch=4, flush_s=0.5)
    config = (other / "bench_aggregated" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in config and "preferred_batch_size: [ 4 ]" in config
    assert 'string_value: "aggregated"' in config and 'string_value: "0.5"' in config
    with pytest.raises(ValueError, match="unknown variant"):
        bench.build_repository(tmp_path / "x", ["fancy"])


def test_add_digits_copies_the_real_model_with_metrics_off_and_on(tmp_path):
    names = bench.add_digits(tmp_path, flush_s=0.5)
    assert names == ["digits_metrics_off", "digits_metrics_on"]
    for name, setting in zip(names, ("off", "on"), strict=True):
        config = (tmp_path / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config and f'string_value: "{setting}"' in config
        assert 'string_value: "0.5"' in config
        assert (tmp_path / name / "1" / "digits.onnx").read_bytes() == (
            bench.DIGITS_SOURCE / "1" / "digits.onnx"
        ).read_bytes()
        assert (tmp_path / name / "1" / "triton_metrics.py").read_bytes() == paths.HELPER.read_bytes()
    name, images = bench.digits_input(3)
    assert name == "IMAGES" and images.shape == (3, 64) and images.dtype == np.float32


def test_every_variant_window_sits_between_two_baseline_windows():
    order = bench.interleaved(["none", "a", "b", "c"], cycles=3)
    assert order[0] == order[-1] == "none" and len(order) == 3 * 6 + 1
    assert order[1::2] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # the others, rotated each cycle
    assert set(order[0::2]) == {"none"}
    assert bench.interleaved(["none"], cycles=2) == ["none", "none"]


def test_ratios_are_taken_against_the_baseline_windows_around_each_window():
    """A machine that slows down by half in the middle of the run: each ratio still compares like with like."""
    speed = [1.0, 1.0, 1.0, 0.5, 0.5]  # the machine, window by window
    order = ["none", "a", "none", "a", "none"]
    variant = {"none": 1000.0, "a": 900.0}  # requests/s of each on a quiet machine: a costs 10 %
    requests = [int(variant[m] * f / 2) for m, f in zip(order, speed, strict=True)]  # 0.5 s windows
    rows = pd.DataFrame(
        {
            "window": range(5),
            "cycle": [0, 0, 0, 1, 1],
            "model": order,
            "throughput_rps": [2.0 * r for r in requests],
            "requests": requests,
            # CPU per request does not change with the machine's speed: 350 us for none, 400 us for a
            "client_cpu_s": [100e-6 * r for r in requests],
            "server_cpu_s": [(200e-6 if m == "none" else 250e-6) * r for m, r in zip(order, requests, strict=True)],
            "stub_cpu_s": [50e-6 * r for r in requests],
            "errors": [0] * 5,
        }
    ).sample(frac=1.0, random_state=1)  # the order of the rows does not matter, the window numbers do
    table = bench.summarize(rows, {m: np.array([0.001]) for m in variant}, dict.fromkeys(variant, 8.0), "none")
    # window 1: 900 / mean(1000, 1000) = 0.9; window 3: 450 / mean(1000, 500) = 0.6; against the same cycle's
    # first none window only, window 3 would read 0.45
    assert table.loc["a", "ratio"] == pytest.approx(0.75)
    assert (table.loc["a", "ratio_q25"], table.loc["a", "ratio_q75"]) == pytest.approx((0.675, 0.825))
    assert table.loc["none", "ratio"] == 1.0 and table.loc["none", "cpu_ratio"] == 1.0
    assert table.loc["a", "cpu_ratio"] == pytest.approx(350 / 400)
    assert table.loc["a", "server_cpu_ratio"] == pytest.approx(250 / 300)
    assert table.loc["a", "cpu_us"] == pytest.approx(400) and table.loc["none", "cpu_us"] == pytest.approx(350)


def must_equal(variant: str) -> list[tuple[str, str]]:
    """(the variant's own count, Triton's count) pairs: per request (naive, thread, aggregated) or per execute."""
    if variant == "aggregated":
        histogram = ("bench_aggregated_request_duration_seconds_count", "nv_inference_count")
    elif variant in ("naive", "thread"):
        histogram = ("bench_request_duration_seconds_count", "nv_inference_count")
    else:
        histogram = ("bench_execute_duration_seconds_count", "nv_inference_exec_count")
    return [("bench_requests_total", "nv_inference_count"), histogram]


@pytest.mark.integration
def test_variants_make_the_calls_they_claim(tmp_path):
    """Per request (naive, thread, aggregated) the histogram counts requests; per execute, executes.

    The aggregated variant's counts arrive with its next flush (every 0.25 s here), the thread variant's when
    its thread catches up: read again, bounded, until they equal Triton's.
    """
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
    command += ["--calls", "50", "--processes", "1", "--concurrency", "4", "--batch", "2", "--quiet"]
    command += ["--digits-images", "4"]
    done = subprocess.run(command, cwd=paths.ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert "Per-call cost" in done.stdout and "metric calls" in done.stdout
    assert set(result["per_call_us"]) >= {"increment", "set", "observe"}
    variants = {"naive", "recommended", "helper", "thread", "aggregated"}
    for key in ("throughput_ratio", "throughput_ratio_quartiles", "cpu_ratio", "cpu_ratio_quartiles"):
        assert set(result[key]) == variants, key
    assert result["uninstrumented_rps"] > 0 and result["batch"] == 2
    assert all(np.isfinite(v) and v > 0 for v in result["throughput_ratio"].values())
    assert all(np.isfinite(v) and v > 0 for v in result["cpu_ratio"].values())
    assert all(q25 <= q75 for q25, q75 in result["cpu_ratio_quartiles"].values())
    # no variant ran bigger batches than asked for (a batch cut short by the end of a window may be smaller)
    assert all(1 <= batch <= 2 for batch in result["mean_batch"].values())
    # a metric call is a round trip to the server process: far dearer than reading the clock
    for kind in ("increment", "set", "observe"):
        assert result["per_call_us"][kind] > 5 * result["per_call_us"]["perf_counter"]
    # the real model, metrics off and on, side by side: both served every request, the ratios are real numbers
    assert "digits_classifier" in done.stdout and "metrics on" in done.stdout and "metrics off" in done.stdout
    digits = result["digits"]
    assert digits["images_per_request"] == 4 and digits["errors"] == 0
    assert all(v > 0 for v in digits["throughput_rps"].values()) and set(digits["throughput_rps"]) == {"off", "on"}
    for key in ("throughput_ratio", "cpu_ratio", "server_cpu_ratio", "p50_ratio", "p99_ratio"):
        assert np.isfinite(digits[key]) and digits[key] > 0, key
    assert digits["throughput_ratio_quartiles"][0] <= digits["throughput_ratio_quartiles"][1]
    assert all(v > 0 for v in digits["cpu_us_per_request"].values())
