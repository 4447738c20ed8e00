"""Pitfall: a metric name that Prometheus does not allow.

Dots (a StatsD and Graphite habit) and dashes are not allowed in Prometheus
names, which must match ``[a-zA-Z_:][a-zA-Z0-9_:]*``. The model does not load
(Triton 2.51.0):

    Invalid metric name

Fix: underscores, ``pitfall_requests_total``. A label name with a dash fails
with ``Invalid label name``.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall.requests.total",  # WRONG: dots are not allowed
            description="Requests handled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
