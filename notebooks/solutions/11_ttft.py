"""Solution of exercise 11: the time to first token, observed where it belongs.

This is the reference model ``model_repository/llm_stream/1/model.py`` (its docstring describes every
metric). In ``stream``, right after the first token's ``send()`` returns,
``self.ttft.observe(now - received)``: from the model receiving the request to its first token leaving.
The exercise's copy observed it after the loop, when the whole stream had been sent: that measured the
stream, not the wait for its first token, and came out longer than what the client measured.
"""

import threading
import time
import zlib

import numpy as np
import triton_python_backend_utils as pb_utils

VOCABULARY = (
    "the model streams one token at a time and every token moves a counter while a histogram "
    "keeps the time to the first token and the gaps between the next ones so a dashboard shows "
    "how long users wait before text appears and how fast it flows after that"
).split()
PREFILL_BASE_S = 0.02  # the "prefill" before the first token: 20 ms ...
PREFILL_PER_WORD_S = 0.0005  # ... plus 0.5 ms per prompt word
DECODE_S = 0.01  # then one token every 10 ms
MAX_TOKENS_LIMIT = 64
# Buckets (seconds) around this model's latencies; Triton adds +Inf
TTFT_BUCKETS = [0.01, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0]
ITL_BUCKETS = [0.005, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25]
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50]  # vLLM's 1-2-5 buckets up to the token budget
ERROR_TYPES = ("empty_prompt", "max_tokens", "cancelled", "internal")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def generate(prompt: str, max_tokens: int):
    """The tokens for ``prompt``: the same on every call, different for different prompts."""
    seed = zlib.crc32(prompt.encode("utf-8"))
    for position in range(max_tokens):
        yield VOCABULARY[zlib.crc32(position.to_bytes(4, "little"), seed) % len(VOCABULARY)]


def refusal(prompt: str, max_tokens: int) -> tuple[str, str] | None:
    """``(error_type, message)`` for a request the model refuses, else None."""
    if not prompt.strip():
        return "empty_prompt", "PROMPT is empty; send some text"
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        return "max_tokens", f"MAX_TOKENS must be 1..{MAX_TOKENS_LIMIT}, got {max_tokens}"
    return None


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        histogram, counter = pb_utils.MetricFamily.HISTOGRAM, pb_utils.MetricFamily.COUNTER

        # Every family stays on self as long as its metrics live (notebook 07).
        self.ttft_family = pb_utils.MetricFamily(
            name="llm_time_to_first_token_seconds",
            description="Time from receiving a request to sending its first token, in seconds",
            kind=histogram,
        )
        self.ttft = self.ttft_family.Metric(labels=labels, buckets=TTFT_BUCKETS)
        self.itl_family = pb_utils.MetricFamily(
            name="llm_inter_token_latency_seconds",
            description="Time between two consecutive tokens of a stream, in seconds",
            kind=histogram,
        )
        self.itl = self.itl_family.Metric(labels=labels, buckets=ITL_BUCKETS)
        self.per_request_family = pb_utils.MetricFamily(
            name="llm_request_generation_tokens",
            description="Tokens generated per finished request",
            kind=histogram,
        )
        self.per_request = self.per_request_family.Metric(labels=labels, buckets=TOKEN_BUCKETS)
        self.tokens_family = pb_utils.MetricFamily(
            name="llm_generation_tokens_total", description="Tokens generated", kind=counter
        )
        self.tokens = self.tokens_family.Metric(labels=labels)
        self.running_family = pb_utils.MetricFamily(
            name="llm_requests_running",
            description="Requests whose tokens are being generated now",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.running = self.running_family.Metric(labels=labels)
        self.success_family = pb_utils.MetricFamily(
            name="llm_request_success_total", description="Requests that got all their tokens", kind=counter
        )
        self.success = self.success_family.Metric(labels=labels)
        self.errors_family = pb_utils.MetricFamily(
            name="llm_request_errors_total", description="Requests refused or broken off, by error type", kind=counter
        )
        # every error series exists (at 0) from the start, before its first error
        self.errors = {t: self.errors_family.Metric(labels={**labels, "error_type": t}) for t in ERROR_TYPES}

        self.metric_lock = threading.Lock()  # one metric call at a time (see the module docstring)
        self.threads: set[threading.Thread] = set()
        self.threads_lock = threading.Lock()

    def execute(self, requests):
        for request in requests:
            received = time.perf_counter()  # TTFT starts when the model has the request
            sender = request.get_response_sender()
            prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1)[0]
            prompt = prompt.decode("utf-8", errors="replace") if isinstance(prompt, bytes) else str(prompt)
            max_tokens = int(pb_utils.get_input_tensor_by_name(request, "MAX_TOKENS").as_numpy().reshape(-1)[0])
            refused = refusal(prompt, max_tokens)
            if refused:  # one error response, which also ends the stream; counted once
                error_type, message = refused
                self.record(self.errors[error_type].increment, 1)
                error = pb_utils.TritonError(f"llm_stream: {message}", pb_utils.TritonError.INVALID_ARG)
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=FINAL)
                continue
            self.record(self.running.increment, 1)
            thread = threading.Thread(target=self.stream, args=(sender, prompt, max_tokens, received), daemon=True)
            with self.threads_lock:
                self.threads.add(thread)
            thread.start()
        return None  # a decoupled model answers through the response senders

    def stream(self, sender, prompt: str, max_tokens: int, received: float) -> None:
        """Send the tokens of one request, then the final flag; its metrics move exactly once."""
        outcome, sent = "internal", 0
        try:
            time.sleep(PREFILL_BASE_S + PREFILL_PER_WORD_S * len(prompt.split()))  # "prefill"
            last_sent = None
            for token in generate(prompt, max_tokens):
                if last_sent is not None:
                    time.sleep(DECODE_S)  # "decode": one token per step
                if sender.is_cancelled():  # the client cancelled: stop generating
                    break
                tensor = pb_utils.Tensor("TOKEN", np.array([token.encode("utf-8")], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[tensor]))
                now = time.perf_counter()
                if last_sent is None:
                    self.record(self.ttft.observe, now - received)  # the first token has left the model
                else:
                    self.record(self.itl.observe, now - last_sent)
                self.record(self.tokens.increment, 1)
                last_sent, sent = now, sent + 1
            outcome = "success" if sent == max_tokens else "cancelled"
        finally:
            self.finish(sender, outcome, sent)

    def finish(self, sender, outcome: str, sent: int) -> None:
        """Record how the stream ended, then send the final flag (the metrics first: a client that has
        seen its stream end also sees it counted and no longer running)."""
        try:
            if outcome == "success":
                self.record(self.per_request.observe, sent)
                self.record(self.success.increment, 1)
            else:
                self.record(self.errors[outcome].increment, 1)
            self.record(self.running.increment, -1)
            if outcome == "internal":
                error = pb_utils.TritonError("llm_stream: the stream failed; see the server log")
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=FINAL)
            else:  # also after a cancel: the final flag releases the request
                sender.send(flags=FINAL)
        finally:
            with self.threads_lock:
                self.threads.discard(threading.current_thread())

    def record(self, method, value) -> None:
        """Call one metric method (increment, observe) under the metric lock."""
        with self.metric_lock:
            method(value)

    def finalize(self):
        with self.threads_lock:
            threads = list(self.threads)
        for thread in threads:  # let open streams end (a few seconds at most) before the instance goes
            thread.join(timeout=5)
