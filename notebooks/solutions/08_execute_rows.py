"""Solution of exercise 08: a histogram of the rows per execute() call.

``cookbook_execute_rows`` is observed once per ``execute`` call with the rows
of all its requests added up; its buckets are the batch sizes up to
``max_batch_size`` (8). Its ``_count`` then equals Triton's
``nv_inference_exec_count`` and its ``_sum`` Triton's ``nv_inference_count``.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

BATCH_OVERHEAD_S = 0.002  # one "kernel launch" per execute() call: batching pays off
ROW_BUCKETS = [1, 2, 4, 8]  # the batch sizes up to max_batch_size; Triton adds +Inf


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.rows_family = pb_utils.MetricFamily(
            name="cookbook_execute_rows",
            description="Rows per execute() call",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.rows = self.rows_family.Metric(labels=labels, buckets=ROW_BUCKETS)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        self.rows.observe(sum(x.shape[0] for x in inputs))  # once per call: the batch, in rows
        time.sleep(BATCH_OVERHEAD_S)
        responses = []
        for x in inputs:
            output = (x * 2).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", output)]))
        return responses
