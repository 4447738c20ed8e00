"""cookbook_normalize: step 1 of ``cookbook_pipeline``: (x - mean) / std.

No custom metrics of its own: the pipeline times and counts its steps, and
Triton's ``nv_inference_*{model="cookbook_normalize"}`` count its requests.
Empty input, more than ``MAX_ELEMENTS`` values, NaN or infinity get an error
response.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

MAX_ELEMENTS = 4096


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            problem = check(values)
            if problem:
                error = pb_utils.TritonError(f"cookbook_normalize: {problem}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            std = float(values.std()) or 1.0
            result = ((values - values.mean()) / std).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses


def check(values: np.ndarray) -> str:
    """What is wrong with the input ("" when nothing)."""
    if values.size == 0:
        return "INPUT0 is empty"
    if values.size > MAX_ELEMENTS:
        return f"INPUT0 has {values.size} values; the limit is {MAX_ELEMENTS}"
    if not np.isfinite(values).all():
        return "INPUT0 contains NaN or infinity"
    return ""
