"""A model written with the metrics API that some web articles invent. It does NOT load.

``pb_utils.Metrics``, ``pb_utils.MetricType`` and ``.inc()`` do not exist in
Triton's Python backend; Triton refuses to load this model and its log says
``AttributeError: module 'triton_python_backend_utils' has no attribute 'Metrics'``.
The real API is ``pb_utils.MetricFamily(...)`` and ``family.Metric(...)``: see step1_counter.py.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # WRONG: none of these three names exists.
        self.requests = pb_utils.Metrics("demo_requests_total", pb_utils.MetricType.COUNTER)

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.inc()  # WRONG: the real call is increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
