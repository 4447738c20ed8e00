"""Solution of exercise 01: step 1 plus a counter of the values received.

``demo_input_values_total`` is a counter (values only add up) whose series is
labelled with the model's name and version, taken from ``args``; ``execute``
increments it by the number of values in each request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={})
        self.values_family = pb_utils.MetricFamily(
            name="demo_input_values_total",
            description="Input values received by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.values = self.values_family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            self.values.increment(values.size)  # a counter may move by any amount >= 0
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
