"""Exercise 11 (notebook 11): a streaming model's time to first token, graded against what a client measures.

Also the gRPC streaming client that the checker and the tests use, :func:`stream`; notebook 11 writes the
same client in full, as the course shows every helper before it hides one.

The grading rests on one fact that no load can bend: the model's time to first token starts after the
client sent the request and ends when the model has sent its first token, so it lies *inside* the client's
time to first token, and it cannot be shorter than the model's "prefill" (the sleep before the first
token). An observation taken at the end of the stream, before the first token, once per token, or in
milliseconds falls outside those bounds.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labkit import paths, scrape, triton

if TYPE_CHECKING:
    from labcheck.checks import Feedback

MODEL = "llm_stream"
CONFIG = paths.MODEL_REPOSITORY / MODEL / "config.pbtxt"
TEMPLATE_11 = paths.NOTEBOOKS / "exercises" / "llm_ttft.py"
FAMILY_11 = "llm_time_to_first_token_seconds"
ITL_11 = "llm_inter_token_latency_seconds"
PREFILL_S = 0.02  # llm_stream's shortest "prefill" (PREFILL_BASE_S): no first token leaves the model sooner
SLACK_S = 0.01  # how far past the client's reading a right observation may end (send() returns after the token left)
# (prompt, max_tokens), sent one at a time; 6 tokens and more: an observation at the stream's end is >= 50 ms late
REQUESTS_11 = (
    ("why is the sky blue", 6),
    ("hello", 8),
    ("stream some tokens for the checker please", 12),
    ("one more prompt", 6),
)


@dataclass
class Stream:
    """What a client saw of one request: its tokens, when each arrived, and when the stream ended."""

    request_id: str
    prompt: str
    max_tokens: int
    sent_at: float  # time.perf_counter() just before the request was sent
    tokens: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    final_at: float = float("nan")

    @property
    def ttft(self) -> float:
        """Seconds from sending the request to its first token (NaN without a token)."""
        return self.arrivals[0] - self.sent_at if self.arrivals else float("nan")

    @property
    def gaps(self) -> np.ndarray:
        """Seconds between consecutive tokens."""
        return np.diff(self.arrivals)


def llm_inputs(prompt: str, max_tokens: int) -> list:
    """The two inputs of ``llm_stream``: PROMPT (BYTES) and MAX_TOKENS (INT32)."""
    import tritonclient.grpc as grpcclient

    text = grpcclient.InferInput("PROMPT", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=np.object_))
    budget = grpcclient.InferInput("MAX_TOKENS", [1], "INT32")
    budget.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    return [text, budget]


def stream(server: triton.TritonServer, requests: Sequence[tuple[str, int]], timeout: float = 30.0) -> list[Stream]:
    """Send every ``(prompt, max_tokens)`` at once on one gRPC stream and wait until each has ended.

    Raises the first error a stream ends with (an ``InferenceServerException``: tritonclient passes an error
    without its request id), and ``TimeoutError`` when nothing arrives for ``timeout`` seconds.
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    arrivals: queue.Queue = queue.Queue()  # the callback runs on tritonclient's thread: hand everything over
    client.start_stream(callback=lambda result, error: arrivals.put((time.perf_counter(), result, error)))
    streams = {}
    try:
        for index, (prompt, max_tokens) in enumerate(requests):
            key, inputs = str(index), llm_inputs(prompt, max_tokens)
            streams[key] = Stream(key, prompt, max_tokens, time.perf_counter())
            client.async_stream_infer(MODEL, inputs, request_id=key, enable_empty_final_response=True)
        remaining = len(streams)
        while remaining:
            try:
                when, result, error = arrivals.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{remaining} of {len(streams)} streams had not ended after {timeout:g} s") from None
            if error is not None:
                raise error
            response = result.get_response()
            row = streams[response.id]
            if response.parameters["triton_final_response"].bool_param:
                row.final_at, remaining = when, remaining - 1
            else:
                row.tokens.append(result.as_numpy("TOKEN")[0].decode("utf-8"))
                row.arrivals.append(when)
    finally:
        client.stop_stream(cancel_requests=True)  # nothing left to cancel unless an error cut the wait short
        client.close()
    return list(streams.values())


# ------------------------------------------------------------------ exercise 11


@dataclass
class _Observed:
    """One request of the check: what the client saw and the scrapes around it."""

    stream: Stream
    before: pd.DataFrame
    after: pd.DataFrame

    def moved(self, sample: str) -> float:
        return scrape.value(self.after, sample) - scrape.value(self.before, sample)


def _traffic_11(server: triton.TritonServer) -> list[_Observed]:
    """Each request of ``REQUESTS_11`` alone, with a scrape before and after it."""
    observed = []
    before = scrape.scrape(server.metrics_url)
    for prompt, max_tokens in REQUESTS_11:
        (one,) = stream(server, [(prompt, max_tokens)])
        # the model records before its final flag: once the client has the flag, the scrape has the metrics
        after = scrape.scrape(server.metrics_url)
        observed.append(_Observed(one, before, after))
        before = after
    return observed


def check_11(model_py: str | Path | None = None) -> Feedback:
    """Exercise 11: move the time-to-first-token observation of ``exercises/llm_ttft.py`` to where it belongs.

    The model is loaded in a real Triton as ``llm_stream``; 4 prompts of 6 to 12 tokens are streamed one at a
    time. For each, ``llm_time_to_first_token_seconds`` must move by exactly one observation, at least the
    model's 20 ms prefill and at most what the client measured from sending to its first token (+10 ms), and
    ``llm_inter_token_latency_seconds`` by one observation per gap between tokens.
    """
    # imported here: labcheck.checks imports this module at its end (checks.check_11 is this function)
    from labcheck.checks import CORRECT, WRONG, Feedback, _find_histogram, _run_model

    observed, failed = _run_model("11", model_py, TEMPLATE_11, MODEL, CONFIG, _traffic_11)
    if failed is not None:
        return failed
    for one in observed:
        s = one.stream
        if len(s.tokens) != s.max_tokens:
            return Feedback(
                "11",
                WRONG,
                f"The prompt {s.prompt!r} asked for {s.max_tokens} tokens and got {len(s.tokens)}: "
                "change only where the time to first token is observed.",
            )
    missing = _find_histogram("11", observed[-1].after, FAMILY_11)
    if missing is not None:
        return missing
    for one in observed:
        problem = _ttft_problem(one)
        if problem:
            return Feedback("11", WRONG, problem)
    gaps = sum(one.stream.max_tokens - 1 for one in observed)
    itl = sum(one.moved(f"{ITL_11}_count") for one in observed)
    if itl != gaps:
        return Feedback(
            "11",
            WRONG,
            f"{ITL_11}_count moved by {itl:g} for {gaps} gaps between tokens: the time to first token "
            "is right now, but keep one inter-token observation per gap (none for the first token).",
        )
    model_ms = 1e3 * np.mean([one.moved(f"{FAMILY_11}_sum") for one in observed])
    client_ms = 1e3 * np.mean([one.stream.ttft for one in observed])
    return Feedback(
        "11",
        CORRECT,
        f"One observation per request, each inside what the client measured: {model_ms:.1f} ms in the model "
        f"against {client_ms:.1f} ms at the client, on average. The {client_ms - model_ms:.1f} ms between are the "
        "way in and out of the model (notebook 11, section 4).",
    )


def _ttft_problem(one: _Observed) -> str:
    """What is wrong with the TTFT observation of one request, or ""."""
    s = one.stream
    count, total = one.moved(f"{FAMILY_11}_count"), one.moved(f"{FAMILY_11}_sum")
    client_ms = s.ttft * 1e3
    what = f"The prompt {s.prompt!r} ({s.max_tokens} tokens)"
    if count == 0:
        return f"{what} did not move {FAMILY_11}_count: observe once per request, when its first token has been sent."
    if count != 1:
        per_token = " (once per token?)" if count == s.max_tokens else ""
        return f"{what} moved {FAMILY_11}_count by {count:g}{per_token}: observe once per request, at its first token."
    if total > 100 * s.ttft:
        return (
            f"{what}: the model observed {total:g}, the client waited {s.ttft:.4f} s for its first token: "
            "observe seconds (Prometheus' base unit), not milliseconds."
        )
    if total > s.ttft + SLACK_S:
        return (
            f"{what}: the model observed {total * 1e3:.1f} ms, but the client had its first token after "
            f"{client_ms:.1f} ms (and the whole stream after {(s.final_at - s.sent_at) * 1e3:.1f} ms). The model's "
            "time to first token cannot be longer than the client's: it is taken too late (at the end of the "
            "stream?). Observe right after the first token's send()."
        )
    if total < PREFILL_S:
        return (
            f"{what}: the model observed {total * 1e3:.1f} ms, less than the {PREFILL_S * 1e3:.0f} ms prefill "
            "before any token exists: it is taken too early. Observe right after the first token's send()."
        )
    return ""
