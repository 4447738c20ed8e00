"""Pitfall: histogram buckets that are not strictly increasing.

The bounds below were typed by hand and two are swapped. The model does not
load (Triton 2.51.0):

    Bucket Boundaries must be strictly sorted

A repeated bound fails the same way. Fix: ``sorted(set(bounds))``, or write them
in order; Triton adds the ``+Inf`` bucket itself.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

LATENCY_BUCKETS = [0.001, 0.005, 0.0025, 0.01, 0.05]  # WRONG: 0.005 > 0.0025


class TritonPythonModel:
    def initialize(self, args):
        self.latency_family = pb_utils.MetricFamily(
            name="pitfall_unsorted_duration_seconds",
            description="Compute time per request, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.latency = self.latency_family.Metric(labels={}, buckets=LATENCY_BUCKETS)

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.latency.observe(0.001)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
