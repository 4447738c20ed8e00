"""Pitfall: the error counter is updated in a code path that never runs.

``handle`` answers bad input with an error *response*; it never raises. The
error counter sits in an ``except`` around it, so it never moves: clients get
errors while ``pitfall_silent_requests_total{outcome="error"}`` stays at 0.

Fix: update the counter where the error response is made (as the reference
model does), and test the error path against a real server.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall_silent_requests_total",
            description="Requests handled, by outcome",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.success = self.family.Metric(labels={"outcome": "success"})
        self.error = self.family.Metric(labels={"outcome": "error"})

    def execute(self, requests):
        try:
            return [self.handle(request) for request in requests]
        except Exception:
            self.error.increment(len(requests))  # WRONG: handle() never raises, so this never runs
            raise

    def handle(self, request):
        values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        if values.size == 0 or not np.isfinite(values).all():
            error = pb_utils.TritonError("INPUT0 is empty or contains NaN or infinity")
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
        self.success.increment(1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)])
