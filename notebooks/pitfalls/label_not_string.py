"""Pitfall: a label value that is not a string.

``MAX_ELEMENTS`` is an int. Label values must be strings, and the model does
not load (Triton 2.51.0):

    attempt to access JSON non-string as string

``None`` as a value fails the same way. Fix: ``str(MAX_ELEMENTS)``. (Better still,
keep configuration out of labels: a label is for values you will filter or
group by.)
"""

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ELEMENTS = 4096


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall_label_requests_total",
            description="Requests handled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        labels = {"model": args["model_name"], "max_elements": MAX_ELEMENTS}  # WRONG: an int
        self.requests = self.family.Metric(labels=labels)

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
