"""Pitfall: a metric name that another model on the server uses with another kind.

Custom metric families belong to the server, not to a model: this model
registers ``demo_requests_total`` as a GAUGE, but the reference model
``metrics_demo`` has it as a COUNTER. Loaded next to it, this model does not
load (Triton 2.51.0):

    Family name already exists with different type

Same name and same kind is allowed: both models then write to that family (and
to the same series when the labels are equal too). Fix: one prefix per
application, e.g. ``ranker_requests_total``, and one kind per name.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="demo_requests_total",  # WRONG: metrics_demo has this name as a COUNTER
            description="Requests in this model",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.requests = self.family.Metric(labels={"model": args["model_name"]})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
