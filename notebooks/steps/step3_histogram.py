"""Step 3 of building metrics_demo: step 2 + a histogram of the compute time.

``demo_request_duration_seconds`` observes each request's compute time in
seconds, into buckets whose upper bounds are given when the Metric is made.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

# Upper bounds in seconds, strictly increasing; Triton adds the +Inf bucket itself.
LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]


class TritonPythonModel:
    def initialize(self, args):
        # Make each family once, when the model loads, and keep it on self.
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={})  # one series; no labels yet

        self.inflight_family = pb_utils.MetricFamily(
            name="demo_inflight_requests",
            description="Requests being computed by the model right now",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.inflight = self.inflight_family.Metric(labels={})

        self.latency_family = pb_utils.MetricFamily(
            name="demo_request_duration_seconds",
            description="Time the model spends computing one request, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.latency = self.latency_family.Metric(labels={}, buckets=LATENCY_BUCKETS)

    def execute(self, requests):
        responses = []
        self.inflight.increment(len(requests))  # up by the requests handed over
        for request in requests:
            start = time.perf_counter()
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.latency.observe(time.perf_counter() - start)  # in seconds, the Prometheus base unit
            self.inflight.increment(-1)  # down as each one is done
            self.requests.increment(1)  # every request counts (notebook 06: increment(len(requests)) per execute)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
