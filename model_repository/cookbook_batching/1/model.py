"""cookbook_batching: how big are the batches Triton's dynamic batcher builds?

Triton hands ``execute`` a list of requests that its dynamic batcher grouped
together; each request carries ``INPUT0`` of shape ``[rows, 4]``. The model
records, once per ``execute`` call:

- ``cookbook_batch_size`` (histogram): rows in the batch (the sum of the
  requests' first dimensions), buckets 1, 2, 4, 8 (``max_batch_size``);
- ``cookbook_batch_requests_per_execute`` (histogram): requests in the batch.

The work costs a fixed ``BATCH_OVERHEAD_S`` per call plus a little per row, as a
GPU kernel launch would: batching pays off. Output = input * 2.

Labels: ``model``, ``version`` and ``device`` (``CPU:0``, or ``GPU:0`` when the
KIND_GPU variant in ``notebooks/gpu/`` runs it), from ``args``.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

BATCH_OVERHEAD_S = 0.002
PER_ROW_S = 0.0001
SIZE_BUCKETS = [1, 2, 4, 8]  # up to max_batch_size; Triton adds +Inf


class TritonPythonModel:
    def initialize(self, args):
        device = f"{args['model_instance_kind']}:{args['model_instance_device_id']}"
        labels = {"model": args["model_name"], "version": args["model_version"], "device": device}
        self.size_family = pb_utils.MetricFamily(
            name="cookbook_batch_size",
            description="Rows per execute() call, as built by the dynamic batcher",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.batch_size = self.size_family.Metric(labels=labels, buckets=SIZE_BUCKETS)
        self.requests_family = pb_utils.MetricFamily(
            name="cookbook_batch_requests_per_execute",
            description="Requests per execute() call",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.requests_per_execute = self.requests_family.Metric(labels=labels, buckets=SIZE_BUCKETS)

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        rows = sum(x.shape[0] for x in inputs)
        # one metric call of each kind per execute, not per request: each call is a
        # round trip to the server (~20 us)
        self.batch_size.observe(rows)
        self.requests_per_execute.observe(len(requests))
        time.sleep(BATCH_OVERHEAD_S + PER_ROW_S * rows)  # one "kernel" for the whole batch
        outputs = np.concatenate(inputs) * 2
        responses = []
        start = 0
        for x in inputs:
            part = outputs[start : start + x.shape[0]]
            start += x.shape[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", part)]))
        return responses
