"""A fix, not a pitfall: ``finalize`` drops the model's metrics when it is unloaded.

Measured on Triton 2.51.0: when a model is unloaded, its custom series stay on
``/metrics`` with their last values (a model that is gone still reports), and
when it is loaded again its counters carry on from there. Triton's own
per-model counters (``nv_inference_request_success``...) do go back to 0.

Deleting every Metric, then every MetricFamily, in ``finalize`` (which Triton
calls on unload) removes the series; a reload then starts them at 0, like
Triton's own. Metrics before families: a family must outlive its metrics.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.requests_family = pb_utils.MetricFamily(
            name="pitfall_finalized_requests_total",
            description="Requests handled",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={"model": args["model_name"]})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.requests.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses

    def finalize(self):
        del self.requests  # every Metric first...
        del self.requests_family  # ...then its family: the series leaves /metrics
