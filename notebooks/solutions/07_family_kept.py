"""Solution of exercise 07: the pitfall family_deleted.py, fixed.

``make_counter`` now returns the family together with its Metric, and the model
keeps both on ``self``: the family lives as long as the metric that needs it.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def make_counter(name):
    family = pb_utils.MetricFamily(name=name, description="Requests handled", kind=pb_utils.MetricFamily.COUNTER)
    return family, family.Metric(labels={})


class TritonPythonModel:
    def initialize(self, args):
        self.requests_family, self.requests = make_counter("pitfall_deleted_requests_total")  # both kept

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
