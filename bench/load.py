"""A closed-loop gRPC load generator cheap enough not to hide the server's costs.

On a 2-core machine the client shares the CPU with the server, so every
microsecond it spends per request is taken from the server. 16 threads of
``tritonclient.grpc`` (what ``labkit.traffic.closed_loop`` runs) served
4,000-5,700 requests/s from the uninstrumented bench model here, this sender
4,800-6,400 in the same rounds (interleaved, same server). So this sender:

- sends a prepared ``ModelInferRequest`` protobuf (built once per model) through
  the raw gRPC stub that ships with ``tritonclient``, with ``grpc.aio``: one event
  loop keeps ``concurrency`` requests in flight without a thread per request;
- runs in several worker processes (``processes``), started once and reused,
  so the GIL of one Python is not the limit;
- follows a **schedule** of back-to-back windows, each on one model, that every
  worker knows in advance (wall-clock times): the load switches from model to
  model without a pause, so variants measured a second apart see the same machine.

A window is a short warm-up (requests sent, not counted) followed by the measured
part. A request counts in a window when it was sent to that window's model and
completed inside its measured part. For each window a worker returns the
latency of every counted request and the CPU seconds it used in the measured
part (the client's share of the machine).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """Load on ``model`` from ``start``; measured from ``count_from`` to ``until`` (epoch seconds)."""

    model: str
    start: float
    count_from: float
    until: float

    @property
    def seconds(self) -> float:
        """Length of the measured part."""
        return self.until - self.count_from


@dataclass
class WindowResult:
    """What all the workers measured in one window."""

    window: Window
    latencies_s: np.ndarray
    errors: int
    client_cpu_s: float

    @property
    def requests(self) -> int:
        """Requests completed in the measured part."""
        return int(self.latencies_s.size)

    @property
    def throughput_rps(self) -> float:
        """Completed requests per second in the measured part."""
        return self.requests / self.window.seconds

    def latency_ms(self, q: float) -> float:
        """Client-side latency quantile ``q``, in milliseconds."""
        return float(np.quantile(self.latencies_s, q) * 1e3) if self.latencies_s.size else float("nan")


def schedule(models: Sequence[str], seconds: float, warmup: float, begin: float) -> list[Window]:
    """Back-to-back windows, one per entry of ``models``, starting at ``begin``."""
    windows, at = [], begin
    for model in models:
        windows.append(Window(model, at, at + warmup, at + warmup + seconds))
        at += warmup + seconds
    return windows


#: What a request carries when the schedule names no input for its model: the bench model's ``INPUT0`` [1, 4].
DEFAULT_INPUT = ("INPUT0", np.ones((1, 4), dtype=np.float32))


def _request(model: str, name: str, values: np.ndarray):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, "FP32"
    tensor.shape.extend(values.shape)
    request.raw_input_contents.append(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return request


async def _follow(url: str, windows: Sequence[Window], concurrency: int, inputs: dict | None = None):
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    inputs = inputs or {}
    prepared = {model: _request(model, *inputs.get(model, DEFAULT_INPUT)) for model in {w.model for w in windows}}
    latencies: list[list[float]] = [[] for _ in windows]
    errors = [0] * len(windows)
    cpu = [0.0] * len(windows)
    async with grpc.aio.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await channel.channel_ready()
        await asyncio.sleep(max(0.0, windows[0].start - time.time()))

        async def clock() -> None:
            for i, window in enumerate(windows):
                await asyncio.sleep(max(0.0, window.count_from - time.time()))
                before = time.process_time()
                await asyncio.sleep(max(0.0, window.until - time.time()))
                cpu[i] = time.process_time() - before

        async def client() -> None:
            i = 0
            while True:
                sent = time.time()
                while i < len(windows) and sent >= windows[i].until:
                    i += 1
                if i == len(windows):
                    return
                try:
                    await stub.ModelInfer(prepared[windows[i].model])
                except grpc.aio.AioRpcError:
                    errors[i] += 1
                    continue
                done = time.time()
                if windows[i].count_from <= done <= windows[i].until:
                    latencies[i].append(done - sent)

        await asyncio.gather(clock(), *(client() for _ in range(concurrency)))
    return [np.asarray(x, dtype=np.float64) for x in latencies], errors, cpu, os.getpid()


def _worker(url: str, windows: Sequence[Window], concurrency: int, inputs: dict | None = None):
    return asyncio.run(_follow(url, windows, concurrency, inputs))


def _ready() -> int:
    import grpc  # noqa: F401  (imported once per worker, before any measured window)
    from tritonclient.grpc import service_pb2_grpc  # noqa: F401

    time.sleep(0.2)  # keep this worker busy so that the next task starts another one
    return os.getpid()


class LoadGenerator:
    """``processes`` worker processes, each an event loop with ``concurrency`` requests in flight.

    Use it as a context manager. ``run_schedule(url, windows)`` follows a
    schedule; ``run(url, model, seconds)`` is a schedule of one window.
    """

    def __init__(self, processes: int = 2, concurrency: int = 16) -> None:
        self.processes = processes
        self.concurrency = concurrency
        # spawn, not fork: gRPC does not survive a fork of a process that already uses it
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        pids = {f.result() for f in [self.pool.submit(_ready) for _ in range(processes)]}
        if len(pids) != processes:
            raise RuntimeError(f"asked for {processes} load processes, got {len(pids)}")

    def run_schedule(self, url: str, windows: Sequence[Window], inputs: dict | None = None) -> list[WindowResult]:
        """Every worker follows ``windows``; returns one result per window, all workers together.

        ``inputs``: per model, the ``(name, FP32 array)`` its requests carry (default :data:`DEFAULT_INPUT`).
        """
        if windows[0].start < time.time() + 0.2:
            raise ValueError("the schedule must begin at least 0.2 s from now, so every worker starts on time")
        futures = [
            self.pool.submit(_worker, url, list(windows), self.concurrency, inputs) for _ in range(self.processes)
        ]
        parts = [future.result() for future in futures]
        if len({p[3] for p in parts}) != self.processes:
            raise RuntimeError("the load's workers did not run in separate processes")
        return [
            WindowResult(
                window=window,
                latencies_s=np.concatenate([p[0][i] for p in parts]),
                errors=sum(p[1][i] for p in parts),
                client_cpu_s=sum(p[2][i] for p in parts),
            )
            for i, window in enumerate(windows)
        ]

    def run(self, url: str, model: str, seconds: float, warmup: float = 0.3) -> WindowResult:
        """Closed-loop load on ``model``: ``warmup`` s, then ``seconds`` s measured."""
        return self.run_schedule(url, schedule([model], seconds, warmup, time.time() + 0.5))[0]

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
