"""metrics_demo: the reference model of the course.

For each request it takes a 1-D FP32 tensor ``INPUT0`` of n values and returns
``OUTPUT0``: for every value, its mean absolute difference to all n values. The
work grows as n squared, so small requests take ~0.1 ms and the largest allowed
(4096 values) tens of milliseconds: the latency histogram has a real shape.

It reports three custom metrics through ``pb_utils.MetricFamily``:

- ``demo_requests_total`` (counter): requests handled, by ``outcome``
  (``success`` | ``error``); moved exactly once per request.
- ``demo_inflight_requests`` (gauge): requests being computed right now.
- ``demo_request_duration_seconds`` (histogram): compute time of each
  successful request, in seconds.

Every series carries ``model`` and ``version`` labels taken from ``args``.
Bad input (empty, too large, NaN or infinity) gets an error response and moves
the error counter; the model never raises out of ``execute``.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ELEMENTS = 4096
# Buckets (seconds) around this model's latency range: ~0.1 ms for a few values,
# 10-100 ms for the largest inputs. Upper bounds must be strictly increasing;
# Triton adds the +Inf bucket itself.
LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}

        # Keep every MetricFamily on self: if a family is garbage-collected, its
        # metrics fail with "the corresponding 'MetricFamily' has been deleted".
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

    def execute(self, requests):
        responses = []
        self.inflight.increment(len(requests))
        for request in requests:
            start = time.perf_counter()
            try:
                values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                result = mean_abs_difference(values)
            except Exception as err:  # bad input (or a bug): an error response, never a crash
                self.inflight.increment(-1)
                self.requests_error.increment(1)
                error = pb_utils.TritonError(f"metrics_demo: {err}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            self.latency.observe(time.perf_counter() - start)
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
