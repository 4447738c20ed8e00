"""cookbook_streaming: streaming metrics for a decoupled model.

A request asks for ``COUNT`` responses. After ``FIRST_DELAY_S`` ("prefill") the
model sends the first, then one every ``NEXT_DELAY_S``, then the final flag.
Each stream runs in its own thread, so ``execute`` returns at once and one
instance serves many streams at the same time.

Metrics (labels ``model``, ``version``):

- ``cookbook_stream_time_to_first_response_seconds`` (histogram): from the
  model receiving the request to its first response;
- ``cookbook_stream_responses_per_request`` (histogram): responses sent per
  stream, observed when the stream ends;
- ``cookbook_stream_inflight`` (gauge): streams open right now;
- ``cookbook_stream_requests_total{outcome="success"|"error"}`` (counter).

``COUNT`` below 0 or above ``MAX_COUNT`` gets an error response.
"""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FIRST_DELAY_S = 0.02
NEXT_DELAY_S = 0.005
MAX_COUNT = 64
TTFR_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
COUNT_BUCKETS = [0, 1, 2, 4, 8, 16, 32, 64]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.ttfr_family = pb_utils.MetricFamily(
            name="cookbook_stream_time_to_first_response_seconds",
            description="Time from receiving a request to sending its first response, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.ttfr = self.ttfr_family.Metric(labels=labels, buckets=TTFR_BUCKETS)
        self.count_family = pb_utils.MetricFamily(
            name="cookbook_stream_responses_per_request",
            description="Responses sent per request (stream)",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.responses_per_request = self.count_family.Metric(labels=labels, buckets=COUNT_BUCKETS)
        self.inflight_family = pb_utils.MetricFamily(
            name="cookbook_stream_inflight",
            description="Streams open right now",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.inflight = self.inflight_family.Metric(labels=labels)
        self.requests_family = pb_utils.MetricFamily(
            name="cookbook_stream_requests_total",
            description="Streaming requests handled, by outcome",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.success = self.requests_family.Metric(labels={**labels, "outcome": "success"})
        self.error = self.requests_family.Metric(labels={**labels, "outcome": "error"})
        self.threads = set()
        self.lock = threading.Lock()
        # Metric calls from several threads at once crashed Triton 2.51.0 (SIGSEGV /
        # std::bad_alloc in the Python backend): one lock serializes them all.
        self.metric_lock = threading.Lock()

    def execute(self, requests):
        for request in requests:
            received = time.perf_counter()
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "COUNT").as_numpy().reshape(-1)[0])
            if not 0 <= count <= MAX_COUNT:
                self.record(self.error.increment, 1)
                error = pb_utils.TritonError(f"cookbook_streaming: COUNT must be 0..{MAX_COUNT}, got {count}")
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=[], error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            self.record(self.inflight.increment, 1)
            thread = threading.Thread(target=self.stream, args=(sender, count, received), daemon=True)
            with self.lock:
                self.threads.add(thread)
            thread.start()
        return None  # a decoupled model answers through the senders, not here

    def stream(self, sender, count, received):
        open_stream = True
        try:
            for index in range(count):
                time.sleep(FIRST_DELAY_S if index == 0 else NEXT_DELAY_S)
                token = pb_utils.Tensor("TOKEN", np.array([index], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[token]))
                if index == 0:
                    self.record(self.ttfr.observe, time.perf_counter() - received)
            # Update the metrics *before* the final flag: a client that has seen its
            # stream end then also sees it counted (and no longer in flight).
            self.record(self.responses_per_request.observe, count)
            self.record(self.success.increment, 1)
            self.record(self.inflight.increment, -1)
            open_stream = False
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            if open_stream:  # the stream broke off: it is no longer in flight either
                self.record(self.inflight.increment, -1)
            with self.lock:
                self.threads.discard(threading.current_thread())

    def record(self, method, value):
        """Call one metric method (increment, set, observe) under the metric lock."""
        with self.metric_lock:
            method(value)

    def finalize(self):
        # let open streams finish (at most a few seconds) before the instance goes away
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if not self.threads:
                    return
            time.sleep(0.05)
