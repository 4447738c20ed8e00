"""Exercise 12's checker: the requests behind a bad p99, found in Triton's trace file, and why each was slow.

``check_12(behind_p99)`` grades the learner's function on a real trace: it starts Triton 2.51.0 with the trace
file on (every request traced), sends ``trace_demo`` traffic in which some requests are slow because they
compute a lot and others because they wait in the queue behind those, stops the server gracefully (Triton
writes the file at shutdown), and reads the file into one row per request, as notebook 12 does. The answer
must be a pandas Series indexed by ``request_id``: for each request whose ``total_s`` is above the p99 of
``total_s``, ``"queue"`` if it waited longer than it computed, else ``"compute"``.

The trace is made once per Python process (:func:`exercise_traces`) and reused by later checks.
"""

from __future__ import annotations

import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labkit import paths, triton

if TYPE_CHECKING:
    from labcheck.checks import Feedback

MODEL = "trace_demo"
SMALL = (64, 257)  # sizes of the small requests: well under a millisecond of compute each
LARGE = 4096  # the largest input the model takes: ~100 ms of compute on the course machine
QUANTILE = 0.99


def trace_flags(trace_file: str | Path, rate: int = 1) -> list[str]:
    """``tritonserver`` flags for the trace file: every ``rate``-th request, its timestamps, no limit, written
    at shutdown (``log-frequency`` 0, the default); a long exit timeout, so the models unload and the file is
    finalised before Triton gives up (it exits without writing the file when its exit timeout runs out)."""
    return [
        f"--trace-config=triton,file={trace_file}",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=rate={rate}",
        "--trace-config=count=-1",
        "--exit-timeout-secs=30",
    ]


def per_request(events: list[dict]) -> pd.DataFrame:
    """Triton's trace events -> one row per traced request (index: the trace ``id``).

    Columns: ``model_name``, ``model_version``, ``request_id`` (when the client set one), every timestamp
    (ns on the server's steady clock), and the durations in seconds: ``queue_s`` (QUEUE_START ->
    COMPUTE_START), ``input_s``, ``infer_s``, ``output_s`` (the three parts of the compute), ``compute_s``
    (COMPUTE_START -> COMPUTE_END) and ``total_s`` (REQUEST_START -> REQUEST_END). Notebook 12 shows the same
    code in full.
    """
    meta = pd.DataFrame([e for e in events if "model_name" in e]).set_index("id")
    stamps = pd.DataFrame([{"id": e["id"], **t} for e in events for t in e.get("timestamps", [])])
    traces = meta.join(stamps.pivot(index="id", columns="name", values="ns"))
    spans = {
        "queue_s": ("QUEUE_START", "COMPUTE_START"),
        "input_s": ("COMPUTE_START", "COMPUTE_INPUT_END"),
        "infer_s": ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
        "output_s": ("COMPUTE_OUTPUT_START", "COMPUTE_END"),
        "compute_s": ("COMPUTE_START", "COMPUTE_END"),
        "total_s": ("REQUEST_START", "REQUEST_END"),
    }
    for column, (start, end) in spans.items():
        traces[column] = (traces[end] - traces[start]) / 1e9
    return traces


def behind_p99_reference(traces: pd.DataFrame) -> pd.Series:
    """What the checker expects: the requests above the p99 of ``total_s``, each with its cause."""
    slow = traces[traces["total_s"] > traces["total_s"].quantile(QUANTILE)]
    cause = np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute")
    return pd.Series(cause, index=pd.Index(slow["request_id"], name="request_id"), name="cause")


# ------------------------------------------------------------------ the checker's own traced run


def _infer(client, size: int, request_id: str, rng: np.random.Generator) -> None:
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("INPUT0", [size], "FP32")
    tensor.set_data_from_numpy(rng.normal(size=size).astype(np.float32))
    client.infer(MODEL, [tensor], request_id=request_id)


def _send(server: triton.TritonServer, seed: int) -> None:
    """One client sends 500 small requests one after another while, twice, two large requests take both model
    instances and four small ones arrive just after them: those four wait in Triton's queue."""
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(seed)

    def one(size: int, request_id: str) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            _infer(client, size, request_id, np.random.default_rng([seed, len(request_id), size]))

    with ThreadPoolExecutor(6) as pool:  # warm both instances up (the first large request is the slowest)
        list(pool.map(one, [LARGE, LARGE, 100, 100], [f"warmup-{i}" for i in range(4)]))

    def background() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for i in range(500):
                _infer(client, int(rng.integers(*SMALL)), f"bg-{i}", rng)

    with ThreadPoolExecutor(1) as lone, ThreadPoolExecutor(6) as burst:
        running = lone.submit(background)
        for k in range(2):
            time.sleep(0.15)
            large = [burst.submit(one, LARGE, f"burst{k}-{j}") for j in range(2)]
            time.sleep(0.005)
            small = [burst.submit(one, 128, f"burst{k}-{j}") for j in range(2, 6)]
            for future in large + small:
                future.result()
        running.result()


class TracedRunError(RuntimeError):
    """The checker's own Triton run failed; the message quotes the end of Triton's log."""


def traced_run(seed: int = 0) -> pd.DataFrame:
    """Start Triton with every request traced, send :func:`_send`'s traffic, stop it gracefully, return
    :func:`per_request` of its trace file (without the warm-up requests)."""
    trace_file = paths.scratch("check-12") / "trace.json"
    server = triton.start(paths.MODEL_REPOSITORY, models=[MODEL], extra_args=trace_flags(trace_file))
    try:
        _send(server, seed)
    except Exception as err:
        server.stop()
        raise TracedRunError(
            f"The checker's traffic failed ({err}); exit code {server.returncode}.\n{server.log_tail(25)}"
        ) from err
    server.stop(timeout=40, graceful=True)
    if server.returncode != 0 or not trace_file.exists():
        raise TracedRunError(f"Triton did not stop cleanly, so it wrote no trace file:\n{server.log_tail(25)}")
    traces = per_request(json.loads(trace_file.read_text()))
    return traces[~traces["request_id"].str.startswith("warmup")]


@functools.lru_cache(maxsize=1)
def exercise_traces() -> pd.DataFrame:
    """The trace exercise 12 is graded on: a real run in which the requests above the p99 include both a
    request slow from computing and one slow from queueing. A run that lacks one, or whose server failed (on a
    busy machine Triton 2.51.0 has been seen to go away mid-run), is made again, three runs at most."""
    traces, failures = None, []
    for seed in range(3):
        try:
            traces = traced_run(seed)
        except TracedRunError as err:
            failures.append(str(err))
            continue
        if set(behind_p99_reference(traces)) == {"queue", "compute"}:
            break
    if traces is None:
        raise TracedRunError("\n\n".join(failures))
    return traces


# ------------------------------------------------------------------ the check


def _as_series(answer) -> pd.Series | None:
    if isinstance(answer, pd.Series):
        return answer
    if isinstance(answer, dict):
        return pd.Series(answer, dtype=object)
    if isinstance(answer, pd.DataFrame) and answer.shape[1] == 1:
        return answer.iloc[:, 0]
    return None


def check_12(behind_p99) -> Feedback:
    """Exercise 12: ``behind_p99(traces)`` returns, for each request above the p99 of ``total_s``, why it was
    slow: a Series indexed by ``request_id`` with ``"queue"`` or ``"compute"``."""
    from labcheck.checks import CORRECT, NOT_ATTEMPTED, WRONG, Feedback  # here: labcheck.checks imports this module

    traces = exercise_traces()
    answer = behind_p99(traces.copy())
    if answer is None:
        return Feedback("12", NOT_ATTEMPTED, "Make behind_p99(traces) return a pandas Series.")
    series = _as_series(answer)
    if series is None:
        return Feedback(
            "12",
            WRONG,
            f"It returned {type(answer).__name__}; return a pandas Series indexed by request_id, "
            'with "queue" or "compute" for each request.',
        )
    expected = behind_p99_reference(traces)
    got, wanted = set(series.index), set(expected.index)
    p99_ms = traces["total_s"].quantile(QUANTILE) * 1e3
    if got != wanted:
        return Feedback("12", WRONG, _selection_hint(traces, got, wanted, p99_ms))
    series = series.loc[expected.index].astype(str).str.lower()
    wrong = series[series != expected]
    if not wrong.empty:
        if set(series) - {"queue", "compute"}:
            hint = f'the values must be "queue" or "compute", not {sorted(set(series) - {"queue", "compute"})}.'
        elif (series == "compute").all():
            hint = "not every one of them was slow computing: some waited in the queue (queue_s > compute_s)."
        else:
            hint = 'a request is "queue" when its queue_s is larger than its compute_s, else "compute".'
        return Feedback(
            "12", WRONG, f"The right {len(expected)} requests, but {len(wrong)} with the wrong cause: {hint}"
        )
    counts = expected.value_counts()
    return Feedback(
        "12",
        CORRECT,
        f"{len(expected)} requests above the p99 of {p99_ms:.1f} ms: "
        f"{counts.get('compute', 0)} slow computing, {counts.get('queue', 0)} slow waiting in the queue.",
    )


def _selection_hint(traces: pd.DataFrame, got: set, wanted: set, p99_ms: float) -> str:
    """Why the set of requests differs from the expected one, for the mistakes one can tell apart."""
    said = f"It named {len(got)} requests; {len(wanted)} are above the p99 of total_s ({p99_ms:.1f} ms)"
    if got and got <= set(traces.index) and not got & set(traces["request_id"]):
        return f"{said}. Index the Series by request_id (the client's id), not by the trace id."
    by_compute = set(traces.loc[traces["compute_s"] > traces["compute_s"].quantile(QUANTILE), "request_id"])
    if got == by_compute:
        return (
            f"{said}. You picked them by compute_s: a request can also be slow because it waited in the queue; "
            "pick by total_s (REQUEST_START to REQUEST_END)."
        )
    if got < wanted:
        return f"{said}. Some are missing: keep every request whose total_s is above traces['total_s'].quantile(0.99)."
    if got > wanted:
        return f"{said}. Too many: keep only those above the 0.99 quantile of total_s (a p99, not a mean or a p95)."
    return f"{said}. Keep every request whose total_s is above traces['total_s'].quantile(0.99)."
