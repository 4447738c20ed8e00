"""The mistake: an unbounded value (the customer id) as a label of a latency histogram.

The client puts a ``customer`` request parameter on each request. Every new
customer creates a new series for each bucket, plus ``_sum`` and ``_count``:
13 lines on ``/metrics`` per customer here, kept for the life of the server.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]


class TritonPythonModel:
    def initialize(self, args):
        self.labels = {"model": args["model_name"], "version": args["model_version"]}
        self.family = pb_utils.MetricFamily(
            name="unbounded_request_duration_seconds",
            description="Compute time per request, by customer (DON'T: unbounded label)",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.by_customer = {}  # one Metric per customer ever seen: grows without end

    def execute(self, requests):
        responses = []
        for request in requests:
            start = time.perf_counter()
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.cumsum(values, dtype=np.float32)
            customer = json.loads(request.parameters()).get("customer", "unknown")
            if customer not in self.by_customer:
                labels = {**self.labels, "customer": customer}
                self.by_customer[customer] = self.family.Metric(labels=labels, buckets=BUCKETS)
            self.by_customer[customer].observe(time.perf_counter() - start)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
