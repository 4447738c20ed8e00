"""``make bench``: what custom metrics cost a Triton Python model, measured side by side.

1. **Per-call cost.** The ``call_cost`` model times N calls each of counter
   ``increment``, gauge ``set`` and histogram ``observe`` inside ``execute``
   (next to an empty ``time.perf_counter()`` pair) and returns every duration.
2. **Throughput and latency.** ``bench_model`` is loaded once per variant
   (``none``, ``naive``, ``recommended``, ``helper``, ``thread``,
   ``aggregated``; see its ``model.py``) in one server. The same closed-loop
   load (:mod:`bench.load`) cycles through the variants without a pause, a
   short window each, with an uninstrumented window before and after every
   instrumented one (:func:`interleaved`), many times; each variant's
   throughput and CPU time per request are compared with the uninstrumented
   windows around it, and the table shows medians and quartiles. Besides
   requests/s and client latency it reports the CPU time per request of the
   load, the server and the model's stub (less sensitive to a busy machine
   than requests/s) and the mean batch size that dynamic batching formed.

   **Equal batching.** A variant that is slower per ``execute`` would get
   bigger dynamic batches under a closed-loop load and hide part of its cost
   in them. So every variant runs at the same batch size: ``max_batch_size`` and
   ``preferred_batch_size`` are ``--batch`` (8), with a queue delay that lets
   the batcher wait for a full batch, and the load keeps 32 requests in flight
   (the table's ``mean batch`` shows it held).
3. **A real model.** ``model_repository/digits_classifier`` (onnxruntime, with its
   quality and drift metrics) is loaded twice in the same server, with its
   ``metrics`` parameter ``off`` and ``on``, and measured the same way, the
   ``off`` copy before and after every ``on`` window; each request carries
   ``--digits-images`` held-out images (8). The table gives the ratios of
   throughput, CPU per request and client latency, on over off.

It prints a table, then one JSON line (``per_call_us``, ``throughput_ratio``,
``uninstrumented_rps`` and more). ``python -m bench --help`` lists the knobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bench.load import LoadGenerator, Window, schedule
from labkit import paths, repository, scrape, triton

MODELS = Path(__file__).resolve().parent / "models"
VARIANTS = ("none", "naive", "recommended", "helper", "thread", "aggregated")
CALLS_PER = {
    "none": "0",
    "naive": "2 per request",
    "recommended": "2 per execute",
    "helper": "2 per execute",
    "thread": "2 per request, off-thread",
    "aggregated": "0 per request, sums flushed",
}
BATCH = 8  # max_batch_size = preferred_batch_size of every variant
FLUSH_S = 0.25  # the aggregated variant's flush interval: several flushes inside every measured window
KINDS = ("perf_counter", "increment", "set", "observe")
DIGITS_SOURCE = paths.MODEL_REPOSITORY / "digits_classifier"
DIGITS = ("digits_metrics_off", "digits_metrics_on")  # the baseline first
DIGITS_IMAGES = 8  # images per request


def model_name(variant: str, work_us: int = 0) -> str:
    """The name a variant of ``bench_model`` is loaded under (``bench_naive``, ``bench_naive_2000us``)."""
    return f"bench_{variant}" if not work_us else f"bench_{variant}_{work_us}us"


def build_repository(
    dest: str | Path,
    variants: Iterable[str] = VARIANTS,
    work_us: Sequence[int] = (0,),
    batch: int = BATCH,
    flush_s: float = FLUSH_S,
) -> Path:
    """A model repository in ``dest`` with ``call_cost`` and one ``bench_model`` per variant and work time.

    Each model gets a copy of ``dropin/triton_metrics.py`` next to its ``model.py``
    (the tree keeps one). ``batch``: the batch size every variant runs at.
    Call it again on the same ``dest`` to add other variants or work times.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(MODELS / "call_cost", dest / "call_cost", ignore=ignore, dirs_exist_ok=True)
    source = (MODELS / "bench_model" / "config.pbtxt").read_text()
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        for work in work_us:
            name = model_name(variant, work)
            shutil.copytree(MODELS / "bench_model", dest / name, ignore=ignore)
            config = re.sub(r'^name:\s*"[^"]*"', f'name: "{name}"', source, flags=re.MULTILINE)
            config = _set_parameter(config, "metrics", variant)
            config = _set_parameter(config, "work_us", str(work))
            config = _set_parameter(config, "flush_s", f"{flush_s:g}")
            config = _set_batch(config, batch)
            (dest / name / "config.pbtxt").write_text(config)
            repository.add_helper(dest / name)
    return dest


def _set_batch(config: str, batch: int) -> str:
    for pattern, replacement in (
        (r"^max_batch_size:\s*\d+", f"max_batch_size: {batch}"),
        (r"preferred_batch_size:\s*\[\s*\d+\s*\]", f"preferred_batch_size: [ {batch} ]"),
    ):
        config, count = re.subn(pattern, replacement, config, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"{pattern!r} not found in bench_model/config.pbtxt")
    return config


def _set_parameter(config: str, key: str, value: str) -> str:
    pattern = rf'(key:\s*"{key}"\s*value:\s*\{{\s*string_value:\s*)"[^"]*"'
    config, count = re.subn(pattern, rf'\g<1>"{value}"', config)
    if count != 1:
        raise ValueError(f"parameter {key!r} not found in bench_model/config.pbtxt")
    return config


def add_digits(dest: str | Path, flush_s: float = FLUSH_S) -> list[str]:
    """Copies of ``digits_classifier`` in ``dest``, one per name of :data:`DIGITS`: metrics off, metrics on.

    Each gets its ``name``, its ``metrics`` parameter and ``flush_s``, and a copy of the drop-in helper next to
    its ``model.py``. Returns the names, the baseline first.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    source = (DIGITS_SOURCE / "config.pbtxt").read_text()
    for name in DIGITS:
        shutil.copytree(DIGITS_SOURCE, dest / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        config = re.sub(r'^name:\s*"[^"]*"', f'name: "{name}"', source, flags=re.MULTILINE)
        config = _set_parameter(config, "metrics", name.rsplit("_", 1)[1])
        config = _set_parameter(config, "flush_s", f"{flush_s:g}")
        (dest / name / "config.pbtxt").write_text(config)
        repository.add_helper(dest / name)
    return list(DIGITS)


def digits_input(images: int = DIGITS_IMAGES) -> tuple[str, np.ndarray]:
    """What each request to a digits copy carries: ``IMAGES``, the first ``images`` images of sklearn's digits."""
    from sklearn.datasets import load_digits

    return "IMAGES", load_digits().data[:images].astype(np.float32)


# ------------------------------------------------------------------ per-call cost


def call_seconds(server: triton.TritonServer, calls: int) -> pd.DataFrame:
    """Every timed call of the ``call_cost`` model: one column per kind, one row per call, seconds."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=300)
    try:
        tensor = httpclient.InferInput("CALLS", [1], "INT32")
        tensor.set_data_from_numpy(np.array([calls], dtype=np.int32))
        seconds = client.infer("call_cost", inputs=[tensor]).as_numpy("SECONDS")
    finally:
        client.close()
    return pd.DataFrame(seconds.T, columns=list(KINDS))


def per_call_us(seconds: pd.DataFrame) -> pd.DataFrame:
    """Median, p90 and p99 of each kind of call, in microseconds."""
    return (seconds.quantile([0.5, 0.9, 0.99]).T * 1e6).set_axis(["median_us", "p90_us", "p99_us"], axis=1)


# ------------------------------------------------------------------ throughput


def process_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of ``process``, all its threads, user and system.

    On Linux from the process's CPU-time clock (what ``clock_getcpuclockid`` returns: nanosecond
    resolution); elsewhere from psutil, which counts in clock ticks (10 ms), coarse for a 0.5 s window.
    """
    if sys.platform.startswith("linux"):
        try:
            return time.clock_gettime((~process.pid << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
        except OSError:
            pass
    times = process.cpu_times()
    return times.user + times.system


class CpuSampler(threading.Thread):
    """Reads the CPU time of tritonserver and of each model's stub at the edges of every measured window."""

    def __init__(self, server: triton.TritonServer, models: Sequence[str], windows: Sequence[Window], cycles: int):
        super().__init__(name="bench-cpu-sampler", daemon=True)
        root = psutil.Process(server.pid)
        self.server = root
        self.stubs = {}
        for child in root.children(recursive=True):
            for model in models:
                if f"/{model}/" in " ".join(child.cmdline()[1:2]):
                    self.stubs[model] = child
        missing = sorted(set(models) - set(self.stubs))
        if missing:
            raise RuntimeError(f"no stub process found for {missing}")
        self.windows = list(windows)
        self.per_cycle = max(1, len(self.windows) // max(1, cycles))
        self.server_s: list[float] = []
        self.stub_s: list[float] = []

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        return process_cpu_s(process)

    def run(self) -> None:
        for i, window in enumerate(self.windows):
            time.sleep(max(0.0, window.count_from - time.time()))
            server0, stub0 = self._cpu(self.server), self._cpu(self.stubs[window.model])
            time.sleep(max(0.0, window.until - time.time()))
            self.server_s.append(self._cpu(self.server) - server0)
            self.stub_s.append(self._cpu(self.stubs[window.model]) - stub0)
            if (i + 1) % self.per_cycle == 0:
                print(f"  cycle {(i + 1) // self.per_cycle} done", file=sys.stderr, flush=True)


def _batch_counts(server: triton.TritonServer, models: Sequence[str]) -> dict[str, tuple[float, float]]:
    frame = scrape.scrape(server.metrics_url)
    return {
        m: (scrape.value(frame, "nv_inference_count", model=m), scrape.value(frame, "nv_inference_exec_count", model=m))
        for m in models
    }


def measure(
    server: triton.TritonServer,
    load: LoadGenerator,
    models: Sequence[str],
    cycles: int,
    seconds: float,
    warmup: float = 0.1,
    progress: bool = True,
    inputs: dict[str, tuple[str, np.ndarray]] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, float]]:
    """Run ``cycles`` cycles of back-to-back windows of load (see :func:`interleaved`).

    Returns one row per window (``window``, its place in time; ``cycle``,
    ``model``, ``throughput_rps``, ``requests`` and the CPU seconds of the load
    workers, tritonserver and the model's stub in the measured part), every
    counted latency per model, and the mean batch size per model. ``inputs``:
    per model, the ``(name, array)`` its requests carry (default: the bench model's).
    """
    order = interleaved(models, cycles)
    windows = schedule(order, seconds, warmup, time.time() + 1.0)
    before = _batch_counts(server, models)
    sampler = CpuSampler(server, models, windows, cycles if progress else 0)
    if not progress:
        sampler.per_cycle = len(windows) + 1
    sampler.start()
    results = load.run_schedule(server.grpc_url, windows, inputs)
    sampler.join()
    after = _batch_counts(server, models)
    rows = []
    per_cycle = max(1, 2 * (len(models) - 1))
    for i, result in enumerate(results):
        rows.append(
            {
                "window": i,
                "cycle": min(i // per_cycle, cycles - 1),
                "model": result.window.model,
                "throughput_rps": result.throughput_rps,
                "requests": result.requests,
                "client_cpu_s": result.client_cpu_s,
                "server_cpu_s": sampler.server_s[i],
                "stub_cpu_s": sampler.stub_s[i],
                "errors": result.errors,
            }
        )
    frame = pd.DataFrame(rows)
    latencies = {m: np.concatenate([r.latencies_s for r in results if r.window.model == m]) for m in models}
    batches = {m: (after[m][0] - before[m][0]) / max(1.0, after[m][1] - before[m][1]) for m in models}
    return frame, latencies, batches


def interleaved(models: Sequence[str], cycles: int) -> list[str]:
    """The order of the windows: the baseline ``models[0]`` before and after every other model.

    Each cycle is ``base, a, base, b, base, c, ...`` with the others rotated by
    one from cycle to cycle, and one more ``base`` window ends the run. So every
    variant's window has a baseline window right before and right after it, a
    fraction of a second away: what a busy machine does to both, the ratio cancels.
    """
    base, others = models[0], list(models[1:])
    order = []
    for cycle in range(cycles):
        turn = cycle % len(others) if others else 0
        for model in others[turn:] + others[:turn]:
            order += [base, model]
        if not others:
            order.append(base)
    if others:
        order.append(base)
    return order


def summarize(
    rows: pd.DataFrame, latencies: dict[str, np.ndarray], batches: dict[str, float], baseline: str
) -> pd.DataFrame:
    """Per model: throughput and its ratio to ``baseline``, CPU per request, pooled latency quantiles.

    - ``ratio``: the median over cycles of (requests/s / the mean requests/s of
      the baseline windows right before and after it), which cancels the drifts
      of a busy machine; ``ratio_q25``/``ratio_q75`` show its spread.
    - ``cpu_us``: CPU seconds of the load workers, tritonserver and the stub
      over all windows, per request (``server_cpu_us``: tritonserver and the
      stub only; ``stub_cpu_us``: the stub alone).
      Unlike requests/s it does not drop when a neighbour takes the CPU, so
      ``cpu_ratio`` (the median over cycles of the baseline's CPU per request, in
      the windows around, / the variant's; ``cpu_ratio_q25``/``_q75`` its spread) is
      the steadier estimate of the throughput ratio on a machine the benchmark
      has to itself; ``server_cpu_ratio`` the same without the load's CPU: the
      ratio for a server whose clients run elsewhere.
    """
    rows = rows.sort_values("window").reset_index(drop=True)
    grouped = rows.groupby("model", sort=False)
    table = pd.DataFrame({"throughput_rps": grouped["throughput_rps"].median()})
    rows = rows.assign(
        cpu_per_request=(rows["client_cpu_s"] + rows["server_cpu_s"] + rows["stub_cpu_s"])
        / rows["requests"].clip(lower=1),
        server_cpu_per_request=(rows["server_cpu_s"] + rows["stub_cpu_s"]) / rows["requests"].clip(lower=1),
    )
    is_base = rows["model"] == baseline
    for column, name, inverse in (
        ("throughput_rps", "ratio", False),
        ("cpu_per_request", "cpu_ratio", True),
        ("server_cpu_per_request", "server_cpu_ratio", True),
    ):
        # the reference of each window: the mean of the nearest baseline windows before and after it
        base = rows[column].where(is_base)
        reference = pd.concat([base.ffill(), base.bfill()], axis=1).mean(axis=1)
        ratios = rows[column] / reference
        if inverse:  # less CPU per request is better: the baseline's over the variant's
            ratios = 1 / ratios
        ratios = ratios.where(~is_base, 1.0).groupby(rows["model"], sort=False)
        table[name] = ratios.median()
        table[f"{name}_q25"] = ratios.quantile(0.25)
        table[f"{name}_q75"] = ratios.quantile(0.75)
    totals = grouped[["requests", "client_cpu_s", "server_cpu_s", "stub_cpu_s", "errors"]].sum()
    served = totals["requests"].clip(lower=1)
    table["cpu_us"] = (totals["client_cpu_s"] + totals["server_cpu_s"] + totals["stub_cpu_s"]) / served * 1e6
    table["server_cpu_us"] = (totals["server_cpu_s"] + totals["stub_cpu_s"]) / served * 1e6
    table["stub_cpu_us"] = totals["stub_cpu_s"] / served * 1e6
    table["errors"] = totals["errors"]
    table["p50_ms"] = [np.quantile(latencies[m], 0.50) * 1e3 if latencies[m].size else np.nan for m in table.index]
    table["p99_ms"] = [np.quantile(latencies[m], 0.99) * 1e3 if latencies[m].size else np.nan for m in table.index]
    table["mean_batch"] = [batches[m] for m in table.index]
    return table


# ------------------------------------------------------------------ report


def report(costs: pd.DataFrame, table: pd.DataFrame, args: argparse.Namespace) -> dict:
    """Print the table; return the JSON summary."""
    print()
    print(f"Per-call cost inside execute() ({args.calls} calls of each, microseconds):")
    print(costs.round(2).to_string())
    print()
    print(
        f"Throughput and latency: {args.cycles} cycles, each giving every variant {args.seconds:g} s, "
        "with none before and after each "
        f"(load: {args.processes} processes x {args.concurrency} requests in flight, gRPC; "
        f"batch size {args.batch} for every variant; aggregated flushes every {args.flush:g} s):"
    )
    names = [m.removeprefix("bench_") for m in table.index]

    def spread(name: str) -> list[str]:
        return [f"{a:.2f}-{b:.2f}" for a, b in zip(table[f"{name}_q25"], table[f"{name}_q75"], strict=True)]

    shown = pd.DataFrame(
        {
            "metric calls": [CALLS_PER[n] for n in names],
            "req/s": table["throughput_rps"].round(0).to_numpy(),
            "vs none": table["ratio"].round(3).to_numpy(),
            "(q25-q75)": spread("ratio"),
            "CPU us/req": table["cpu_us"].round(1).to_numpy(),
            "vs none (CPU)": table["cpu_ratio"].round(3).to_numpy(),
            "(CPU q25-q75)": spread("cpu_ratio"),
            "server CPU us/req": table["server_cpu_us"].round(1).to_numpy(),
            "p50 ms": table["p50_ms"].round(2).to_numpy(),
            "p99 ms": table["p99_ms"].round(2).to_numpy(),
            "mean batch": table["mean_batch"].round(1).to_numpy(),
        },
        index=pd.Index(names, name="variant"),
    )
    if table["errors"].any():
        shown["errors"] = table["errors"].to_numpy()
    print(shown.to_string())
    print(
        "vs none: median over cycles of (req/s / mean req/s of the none windows just before and after), quartiles.\n"
        "CPU us/req: CPU of the load workers + tritonserver + the model's stub, per request, all cycles together\n"
        "(server CPU: without the load workers);\n"
        "vs none (CPU): median over cycles of (CPU per request of the none windows around / this one's), quartiles:\n"
        "the steadier estimate of the ratio on a busy machine.\n"
        "p50/p99: client-side latency, all cycles pooled. mean batch: requests per execute (Triton's counters)."
    )
    low, high = table["mean_batch"].min(), table["mean_batch"].max()
    if high > low * 1.05:
        print(
            f"\nNOTE: the mean batch ranged from {low:.2f} to {high:.2f}: batching was not held equal "
            "(too few requests in flight for --batch?), so part of each ratio is batching, not metrics."
        )
    base = table.loc[model_name("none")]
    result = {
        "per_call_us": {kind: round(float(costs.loc[kind, "median_us"]), 3) for kind in KINDS},
        "throughput_ratio": {
            m.removeprefix("bench_"): round(float(table.loc[m, "ratio"]), 3)
            for m in table.index
            if m != model_name("none")
        },
        "throughput_ratio_quartiles": {
            m.removeprefix("bench_"): [round(float(table.loc[m, q]), 3) for q in ("ratio_q25", "ratio_q75")]
            for m in table.index
            if m != model_name("none")
        },
        "uninstrumented_rps": round(float(base["throughput_rps"]), 1),
        "p50_ms": {m.removeprefix("bench_"): round(float(v), 3) for m, v in table["p50_ms"].items()},
        "p99_ms": {m.removeprefix("bench_"): round(float(v), 3) for m, v in table["p99_ms"].items()},
        "cpu_ratio": {
            m.removeprefix("bench_"): round(float(table.loc[m, "cpu_ratio"]), 3)
            for m in table.index
            if m != model_name("none")
        },
        "cpu_ratio_quartiles": {
            m.removeprefix("bench_"): [round(float(table.loc[m, q]), 3) for q in ("cpu_ratio_q25", "cpu_ratio_q75")]
            for m in table.index
            if m != model_name("none")
        },
        "server_cpu_ratio": {
            m.removeprefix("bench_"): round(float(table.loc[m, "server_cpu_ratio"]), 3)
            for m in table.index
            if m != model_name("none")
        },
        "cpu_us_per_request": {m.removeprefix("bench_"): round(float(v), 1) for m, v in table["cpu_us"].items()},
        "server_cpu_us_per_request": {
            m.removeprefix("bench_"): round(float(v), 1) for m, v in table["server_cpu_us"].items()
        },
        "stub_cpu_us_per_request": {
            m.removeprefix("bench_"): round(float(v), 1) for m, v in table["stub_cpu_us"].items()
        },
        "mean_batch": {m.removeprefix("bench_"): round(float(v), 2) for m, v in table["mean_batch"].items()},
        "cycles": args.cycles,
        "seconds_per_window": args.seconds,
        "batch": args.batch,
        "flush_interval_s": args.flush,
        "load": f"{args.processes} processes x {args.concurrency} in flight, grpc.aio",
        "cpus": os.cpu_count(),
    }
    if base["throughput_rps"] < 2000:
        print(
            f"\nNOTE: the uninstrumented model served only {base['throughput_rps']:.0f} req/s (< 2000): "
            "the machine is busy or slow, and the ratios understate what metric calls cost a fast model."
        )
    print()
    return result


def report_digits(table: pd.DataFrame, args: argparse.Namespace) -> dict:
    """Print the digits_classifier table (metrics on against off); return its part of the JSON summary."""
    off, on = table.loc[DIGITS[0]], table.loc[DIGITS[1]]
    print(
        f"A real model, digits_classifier (onnxruntime), metrics off and on: {args.cycles} cycles of "
        f"{args.seconds:g} s each, off before and after each on window ({args.digits_images} images per request, "
        f"no batching by Triton; on flushes every {args.flush:g} s):"
    )
    shown = pd.DataFrame(
        {
            "req/s": table["throughput_rps"].round(0).to_numpy(),
            "vs off": table["ratio"].round(3).to_numpy(),
            "(q25-q75)": [f"{a:.2f}-{b:.2f}" for a, b in zip(table["ratio_q25"], table["ratio_q75"], strict=True)],
            "CPU us/req": table["cpu_us"].round(1).to_numpy(),
            "vs off (CPU)": table["cpu_ratio"].round(3).to_numpy(),
            "stub CPU us/req": table["stub_cpu_us"].round(1).to_numpy(),
            "p50 ms": table["p50_ms"].round(2).to_numpy(),
            "p99 ms": table["p99_ms"].round(2).to_numpy(),
        },
        index=pd.Index(["metrics off", "metrics on"], name="digits_classifier"),
    )
    if table["errors"].any():
        shown["errors"] = table["errors"].to_numpy()
    print(shown.to_string())
    print(
        f"on/off: throughput {on['ratio']:.3f}, CPU per request {1 / on['cpu_ratio']:.3f} "
        f"(+{on['cpu_us'] - off['cpu_us']:.1f} us, stub +{on['stub_cpu_us'] - off['stub_cpu_us']:.1f} us), "
        f"p50 latency {on['p50_ms'] / off['p50_ms']:.3f}, p99 latency {on['p99_ms'] / off['p99_ms']:.3f}"
    )
    print()
    return {
        "images_per_request": args.digits_images,
        "throughput_rps": {"off": round(float(off["throughput_rps"]), 1), "on": round(float(on["throughput_rps"]), 1)},
        "throughput_ratio": round(float(on["ratio"]), 3),
        "throughput_ratio_quartiles": [round(float(on[q]), 3) for q in ("ratio_q25", "ratio_q75")],
        "cpu_ratio": round(float(on["cpu_ratio"]), 3),
        "server_cpu_ratio": round(float(on["server_cpu_ratio"]), 3),
        "cpu_us_per_request": {"off": round(float(off["cpu_us"]), 1), "on": round(float(on["cpu_us"]), 1)},
        "stub_cpu_us_per_request": {
            "off": round(float(off["stub_cpu_us"]), 1),
            "on": round(float(on["stub_cpu_us"]), 1),
        },
        "p50_ms": {"off": round(float(off["p50_ms"]), 3), "on": round(float(on["p50_ms"]), 3)},
        "p99_ms": {"off": round(float(off["p99_ms"]), 3), "on": round(float(on["p99_ms"]), 3)},
        "p50_ratio": round(float(on["p50_ms"] / off["p50_ms"]), 3),
        "p99_ratio": round(float(on["p99_ms"] / off["p99_ms"]), 3),
        "errors": int(table["errors"].sum()),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print the table, then the JSON line. Returns the JSON as a dict."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20, help="cycles through all variants (default 20)")
    parser.add_argument("--seconds", type=float, default=0.5, help="measured seconds per variant and cycle")
    parser.add_argument("--warmup", type=float, default=0.1, help="unmeasured seconds at the start of each window")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls of each kind for the per-call cost")
    parser.add_argument("--processes", type=int, default=2, help="load worker processes")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per worker process")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"batch size of every variant (default {BATCH})")
    parser.add_argument(
        "--flush", type=float, default=FLUSH_S, help=f"aggregated: seconds between flushes (default {FLUSH_S:g})"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ",".join(VARIANTS))
    parser.add_argument(
        "--digits-images",
        type=int,
        default=DIGITS_IMAGES,
        help=f"images per request to digits_classifier, metrics off vs on (default {DIGITS_IMAGES}; 0 skips it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "none" not in variants:
        variants.insert(0, "none")

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    repo = build_repository(paths.scratch("bench") / "models", variants, batch=args.batch, flush_s=args.flush)
    digits = add_digits(repo, args.flush) if args.digits_images > 0 else []
    with triton.start(repo) as server, LoadGenerator(args.processes, args.concurrency) as load:
        costs = per_call_us(call_seconds(server, args.calls))
        models = [model_name(v) for v in variants]
        rows, latencies, batches = measure(
            server, load, models, args.cycles, args.seconds, args.warmup, progress=not args.quiet
        )
        if digits:
            inputs = dict.fromkeys(digits, digits_input(args.digits_images))
            digit_rows, digit_latencies, digit_batches = measure(
                server, load, digits, args.cycles, args.seconds, args.warmup, not args.quiet, inputs
            )
    result = report(costs, summarize(rows, latencies, batches, model_name("none")), args)
    if digits:
        result["digits"] = report_digits(summarize(digit_rows, digit_latencies, digit_batches, digits[0]), args)
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
