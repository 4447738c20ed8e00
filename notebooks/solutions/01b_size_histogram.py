"""Solution of exercise 01b: step 1 plus a histogram of the values per request.

``demo_request_size_values`` is a histogram (a distribution of sizes, not a
total) with the bucket upper bounds 10, 100 and 1000 values; ``execute``
observes ``values.size`` once per request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

SIZE_BUCKETS = [10, 100, 1000]  # values per request, strictly increasing; Triton adds +Inf


class TritonPythonModel:
    def initialize(self, args):
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={})
        self.sizes_family = pb_utils.MetricFamily(
            name="demo_request_size_values",
            description="Values per request",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.sizes = self.sizes_family.Metric(labels={}, buckets=SIZE_BUCKETS)

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            self.sizes.observe(values.size)  # one observation per request: its size
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
