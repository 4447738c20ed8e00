"""Pitfall: the MetricFamily is garbage-collected while its Metric lives.

``make_counter`` returns only the Metric; the family was a local variable, so it
is deleted when the function returns. The model loads, and the first update
fails in ``execute`` (Triton 2.51.0):

    Invalid metric operation as the corresponding 'MetricFamily' has been deleted.
    The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' objects have been deleted.

Fix: keep the family on ``self`` as long as its metrics (``self.family = ...``).
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def make_counter(name):
    family = pb_utils.MetricFamily(name=name, description="Requests handled", kind=pb_utils.MetricFamily.COUNTER)
    return family.Metric(labels={})  # WRONG: `family` dies when this function returns


class TritonPythonModel:
    def initialize(self, args):
        self.requests = make_counter("pitfall_deleted_requests_total")

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)  # raises: its family is gone
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
