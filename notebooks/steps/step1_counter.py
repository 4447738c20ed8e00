"""Step 1 of building metrics_demo: one counter, no labels.

The model's work is the reference model's (each value's mean absolute
difference to all values); the only metric is ``demo_requests_total``,
moved once per request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # Make each family once, when the model loads, and keep it on self.
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={})  # one series; no labels yet

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)  # every request counts (notebook 06: increment(len(requests)) per execute)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
