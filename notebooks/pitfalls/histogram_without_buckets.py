"""Pitfall: a histogram Metric made without buckets.

A histogram needs its bucket upper bounds when the Metric is made. Without
them the model does not load (Triton 2.51.0):

    Failed to create metric. Missing required buckets.

Fix: ``family.Metric(labels=..., buckets=[0.001, 0.005, ...])``, bounds in the
metric's unit (seconds here), strictly increasing.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.latency_family = pb_utils.MetricFamily(
            name="pitfall_nobuckets_duration_seconds",
            description="Compute time per request, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.latency = self.latency_family.Metric(labels={})  # WRONG: a histogram needs buckets=[...]

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.latency.observe(0.001)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
