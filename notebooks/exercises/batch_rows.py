"""Exercise 08: how many rows does each execute() call get?

This model runs with dynamic batching (the config of
``model_repository/cookbook_batching``: ``max_batch_size: 8``, a
``dynamic_batching`` block). Triton hands ``execute`` a list of requests that
waited together; each carries ``INPUT0`` of shape ``[rows, 4]``. Output =
input * 2.

Your task: add a HISTOGRAM family ``cookbook_execute_rows`` ("Rows per
execute() call") with one Metric whose buckets are ``[1, 2, 4, 8]``, and
observe, once per ``execute`` call, the rows of all its requests together.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

BATCH_OVERHEAD_S = 0.002  # one "kernel launch" per execute() call: batching pays off


class TritonPythonModel:
    def initialize(self, args):
        # TODO: make the family and its Metric here, and keep both on self.
        pass

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        # TODO: observe the rows of this call (every request's first dimension, added up).
        time.sleep(BATCH_OVERHEAD_S)
        responses = []
        for x in inputs:
            output = (x * 2).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", output)]))
        return responses
