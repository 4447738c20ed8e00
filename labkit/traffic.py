"""Send traffic to Triton with ``tritonclient``: one request, closed loop, open loop, phases.

- **closed loop**: N clients, each sends its next request as soon as the last
  one returns (``closed_loop``). Load follows the server's speed.
- **open loop**: requests leave at a target rate whatever the server does
  (``open_loop``). Queues build when the server cannot keep up.
- **phases**: a sequence of open- or closed-loop phases (ramp, burst, idle).

Every sender returns a DataFrame with one row per request (columns :data:`COLUMNS`):
``scheduled`` (when it was due to leave), ``start`` and ``end`` (epoch seconds),
``late_s`` (``start - scheduled``: how far behind schedule it left, waiting
client-side), ``latency_s`` (from the actual send, ``end - start``),
``latency_from_schedule_s`` (from when it was due, ``end - scheduled`` =
``late_s + latency_s``: what a user who arrived on schedule waits, with no
coordinated omission), ``ok``, ``error`` (the server's message),
``size`` (values sent) and ``bad`` (True when the request was made bad on
purpose by ``error_rate``: it carries a NaN, which the reference model rejects).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

PROTOCOLS = ("http", "grpc")
DEFAULT_MODEL = "metrics_demo"
COLUMNS = ["scheduled", "start", "end", "late_s", "latency_s", "latency_from_schedule_s", "ok", "error", "size", "bad"]


def _address(target, protocol: str) -> str:
    """``host:port`` for ``protocol`` from a TritonServer handle or a URL string."""
    if isinstance(target, str):
        return target.split("://", 1)[-1].rstrip("/")
    url = target.http_url if protocol == "http" else target.grpc_url
    return url.split("://", 1)[-1]


def make_client(target, protocol: str = "http"):
    """A ``tritonclient`` client for ``protocol`` (``"http"`` or ``"grpc"``)."""
    if protocol == "http":
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(_address(target, "http"), connection_timeout=30, network_timeout=60)
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(_address(target, "grpc"))
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def infer(client, values: np.ndarray, model: str = DEFAULT_MODEL, timeout_s: float = 60.0) -> np.ndarray:
    """Send one request with ``INPUT0 = values`` and return ``OUTPUT0``.

    Raises ``tritonclient.utils.InferenceServerException`` with the server's
    message when the request fails.
    """
    values = np.asarray(values, dtype=np.float32)
    if client.__module__.startswith("tritonclient.grpc"):
        import tritonclient.grpc as module

        kwargs = {"client_timeout": timeout_s}
    else:
        import tritonclient.http as module

        kwargs = {}
    tensor = module.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    outputs = [module.InferRequestedOutput("OUTPUT0")]
    result = client.infer(model, inputs=[tensor], outputs=outputs, **kwargs)
    return result.as_numpy("OUTPUT0")


def sample_size(rng: np.random.Generator, sizes: int | tuple[int, int] = (16, 2048)) -> int:
    """A request size: fixed, or log-uniform between two bounds (many small, few large)."""
    if isinstance(sizes, int):
        return sizes
    low, high = sizes
    return int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))


def make_values(rng: np.random.Generator, size: int, bad: bool = False) -> np.ndarray:
    """Random FP32 values; with ``bad=True`` one of them is NaN."""
    values = rng.normal(size=size).astype(np.float32)
    if bad:
        values[rng.integers(size)] = np.nan
    return values


class _Recorder:
    """Thread-safe list of per-request rows with an optional tqdm bar."""

    def __init__(self, total: int | None, progress: bool, desc: str) -> None:
        self.rows: list[dict] = []
        self.lock = threading.Lock()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", mininterval=0.5)

    def add(self, row: dict) -> None:
        with self.lock:
            self.rows.append(row)
            if self.bar is not None:
                self.bar.update(1)
                if not row["ok"]:
                    errors = sum(1 for r in self.rows if not r["ok"])
                    self.bar.set_postfix(errors=errors, refresh=False)

    def frame(self) -> pd.DataFrame:
        if self.bar is not None:
            self.bar.close()
        return pd.DataFrame(self.rows, columns=COLUMNS).sort_values("start", ignore_index=True)


def _send(
    client,
    model: str,
    rng: np.random.Generator,
    sizes,
    error_rate: float,
    recorder: _Recorder,
    scheduled: float | None = None,
) -> None:
    from tritonclient.utils import InferenceServerException

    size = sample_size(rng, sizes)
    bad = bool(error_rate) and rng.random() < error_rate
    values = make_values(rng, size, bad)
    start = time.time()
    t0 = time.perf_counter()
    error = ""
    try:
        infer(client, values, model)
    except InferenceServerException as err:
        error = err.message() or str(err)
    latency = time.perf_counter() - t0
    scheduled = start if scheduled is None else scheduled
    recorder.add(
        {
            "scheduled": scheduled,
            "start": start,
            "end": start + latency,
            "late_s": start - scheduled,
            "latency_s": latency,
            "latency_from_schedule_s": (start - scheduled) + latency,
            "ok": not error,
            "error": error,
            "size": size,
            "bad": bad,
        }
    )


def closed_loop(
    target,
    *,
    concurrency: int = 4,
    requests: int | None = None,
    duration: float | None = None,
    protocol: str = "grpc",
    model: str = DEFAULT_MODEL,
    sizes: int | tuple[int, int] = (16, 2048),
    error_rate: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """``concurrency`` clients send back to back: ``requests`` in all, or for ``duration`` s."""
    if (requests is None) == (duration is None):
        raise ValueError("give exactly one of requests= or duration=")
    recorder = _Recorder(requests, progress, f"closed loop x{concurrency} ({protocol})")
    counter = itertools.count()
    deadline = time.monotonic() + duration if duration is not None else None

    def worker(index: int) -> None:
        client = make_client(target, protocol)
        rng = np.random.default_rng([seed, index])
        try:
            while True:
                if requests is not None and next(counter) >= requests:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                _send(client, model, rng, sizes, error_rate, recorder)
        finally:
            client.close()

    _run_threads(worker, concurrency)
    return recorder.frame()


def open_loop(
    target,
    *,
    rate: float,
    duration: float,
    protocol: str = "grpc",
    model: str = DEFAULT_MODEL,
    sizes: int | tuple[int, int] = (16, 2048),
    error_rate: float = 0.0,
    poisson: bool = False,
    max_in_flight: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Requests leave at ``rate`` per second for ``duration`` s, whatever the server does.

    With ``poisson=True`` the gaps are random (exponential), as real users arrive.
    At most ``max_in_flight`` requests are outstanding; beyond that they wait
    client-side, and ``late_s`` (``start - scheduled``) shows how late they left.
    ``latency_s`` counts from the actual send; ``latency_from_schedule_s`` counts
    from the schedule, waits included, as users on that schedule would see it.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0 (use time.sleep for an idle phase)")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate, size=int(rate * duration * 2) + 10) if poisson else None
    total = int(rate * duration)
    recorder = _Recorder(total if not poisson else None, progress, f"open loop {rate:g}/s ({protocol})")
    local = threading.local()
    clients: list = []
    lock = threading.Lock()

    def send(index: int, due: float) -> None:
        if not hasattr(local, "client"):
            local.client = make_client(target, protocol)
            with lock:
                clients.append(local.client)
        _send(local.client, model, np.random.default_rng([seed, index]), sizes, error_rate, recorder, due)

    start = time.monotonic()
    wall_start = time.time()
    with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="labkit-open") as pool:
        at = 0.0
        for index in itertools.count():
            at = at + gaps[index % len(gaps)] if poisson else index / rate
            if at >= duration:
                break
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, index, wall_start + at)
    for client in clients:
        client.close()
    return recorder.frame()


@dataclass
class Phase:
    """One phase of a traffic run: open loop at ``rate``, closed loop at ``concurrency``, or idle."""

    name: str
    duration: float
    rate: float | None = None
    concurrency: int | None = None
    error_rate: float = 0.0
    sizes: int | tuple[int, int] = (16, 2048)


def run_phases(
    target,
    phases: list[Phase],
    *,
    protocol: str = "grpc",
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    progress: bool = True,
    on_phase: Callable[[Phase], None] | None = None,
) -> pd.DataFrame:
    """Run phases back to back; the result has a ``phase`` column.

    A phase with neither ``rate`` nor ``concurrency`` is idle: nothing is sent.
    Every phase's span, idle ones included, is in ``result.attrs["phases"]``
    (columns ``phase``, ``start``, ``end``), which the plots use to shade them.
    """
    frames = []
    spans = []
    for number, phase in enumerate(phases):
        if on_phase is not None:
            on_phase(phase)
        began = time.time()
        common = dict(protocol=protocol, model=model, sizes=phase.sizes, error_rate=phase.error_rate)
        common.update(duration=phase.duration, seed=seed + number, progress=progress)
        if phase.rate:
            frame = open_loop(target, rate=phase.rate, **common)
        elif phase.concurrency:
            frame = closed_loop(target, concurrency=phase.concurrency, **common)
        else:
            time.sleep(phase.duration)
            spans.append({"phase": phase.name, "start": began, "end": time.time()})
            continue
        frames.append(frame.assign(phase=phase.name))
        spans.append({"phase": phase.name, "start": began, "end": time.time()})
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "phase"])
    result.attrs["phases"] = pd.DataFrame(spans, columns=["phase", "start", "end"])
    return result


def summarize(frame: pd.DataFrame, latency: str = "latency_s") -> pd.Series:
    """Requests, errors, throughput and client-side latency percentiles of a run.

    The percentiles are of the column ``latency`` (from the actual send); pass
    ``latency="latency_from_schedule_s"`` for an open loop's view from the schedule.
    """
    ok = frame[frame["ok"]]
    span = frame["end"].max() - frame["start"].min() if len(frame) else float("nan")
    return pd.Series(
        {
            "requests": len(frame),
            "errors": int((~frame["ok"]).sum()),
            "throughput_rps": len(frame) / span if span else float("nan"),
            "p50_ms": ok[latency].quantile(0.50) * 1e3,
            "p95_ms": ok[latency].quantile(0.95) * 1e3,
            "p99_ms": ok[latency].quantile(0.99) * 1e3,
        }
    )


def _run_threads(worker: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            worker(index)
        except BaseException as err:  # surfaced below, in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"labkit-client-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
