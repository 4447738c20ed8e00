"""cookbook_score: step 2 of ``cookbook_pipeline``: one score per input.

The score is the mean of ``tanh`` of the values, O(n) work plus a short pretend
model call (``SLEEP_S``). More than ``MAX_ELEMENTS`` values get an error
response: a limit the first step does not have, so a long input fails here,
at the second step.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ELEMENTS = 1024
SLEEP_S = 0.001


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if values.size > MAX_ELEMENTS:
                error = pb_utils.TritonError(f"cookbook_score: {values.size} values; the limit is {MAX_ELEMENTS}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            time.sleep(SLEEP_S)
            score = np.array([np.tanh(values).mean()], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", score)]))
        return responses
