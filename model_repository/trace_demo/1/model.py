"""trace_demo: the reference model, plus a way to find its slow requests again.

The same work and metrics as ``metrics_demo`` (``OUTPUT0``: each value's mean absolute difference to
all n values, O(n^2); ``demo_requests_total{outcome}``, ``demo_inflight_requests``,
``demo_request_duration_seconds``), and two more things for requests whose compute took longer than
``SLOW_SECONDS``:

- ``demo_slow_requests_total`` (counter): how many there were. A counter cannot say *which*: a
  request id as a label value would make one series per request (unbounded cardinality).
- one warning line in Triton's log with the request's id (the ``request_id`` the client set, which
  Triton's trace file records too), its size and its compute time: the link from a slow bucket of the
  histogram back to the request, that Triton's metrics cannot carry (they have no exemplars).
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ELEMENTS = 4096
LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]
SLOW_SECONDS = 0.005  # a bucket bound of the histogram (5 ms): slower than this gets a log line


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        # every MetricFamily stays on self for as long as its metrics are used
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model, by outcome",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests_success = self.requests_family.Metric(labels={**labels, "outcome": "success"})
        self.requests_error = self.requests_family.Metric(labels={**labels, "outcome": "error"})
        self.inflight_family = pb_utils.MetricFamily(
            name="demo_inflight_requests",
            description="Requests being computed by the model right now",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.inflight = self.inflight_family.Metric(labels=labels)
        self.latency_family = pb_utils.MetricFamily(
            name="demo_request_duration_seconds",
            description="Time the model spends computing one request, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.latency = self.latency_family.Metric(labels=labels, buckets=LATENCY_BUCKETS)
        self.slow_family = pb_utils.MetricFamily(
            name="demo_slow_requests_total",
            description=f"Requests whose compute took longer than {SLOW_SECONDS} s (each logged with its id)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.slow = self.slow_family.Metric(labels=labels)

    def execute(self, requests):
        responses = []
        self.inflight.increment(len(requests))
        for request in requests:
            start = time.perf_counter()
            try:
                values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                result = mean_abs_difference(values)
            except Exception as err:  # bad input: an error response, never a crash
                self.inflight.increment(-1)
                self.requests_error.increment(1)
                error = pb_utils.TritonError(f"trace_demo: {err}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            elapsed = time.perf_counter() - start
            self.latency.observe(elapsed)
            if elapsed > SLOW_SECONDS:
                self.slow.increment(1)
                pb_utils.Logger.log_warn(
                    f"slow request id={request.request_id()!r} values={values.size} compute_s={elapsed!r}"
                )
            self.inflight.increment(-1)
            self.requests_success.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses


def mean_abs_difference(values: np.ndarray) -> np.ndarray:
    """Validate the input, then return each value's mean absolute difference to all values."""
    if values.ndim != 1:
        raise ValueError(f"INPUT0 must be 1-D, got shape {list(values.shape)}")
    if values.size == 0:
        raise ValueError("INPUT0 is empty; send at least one value")
    if values.size > MAX_ELEMENTS:
        raise ValueError(f"INPUT0 has {values.size} values; the limit is {MAX_ELEMENTS}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"INPUT0 contains NaN or infinity (first at index {bad[0]})")
    diffs = np.abs(values[:, None] - values[None, :])
    return diffs.mean(axis=1, dtype=np.float32).astype(np.float32)
