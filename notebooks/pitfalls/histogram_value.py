"""Pitfall: ``value()`` on a histogram.

A histogram has ``observe`` only: it cannot give one value back. The model
loads; the call fails in ``execute`` (Triton 2.51.0):

    TRITONSERVER_METRIC_KIND_HISTOGRAM does not support Value

and, measured on this server, such a refused call can also abort the whole
server (see notebook 07). Fix: keep your own running count in Python if the
model needs one; read histograms from ``/metrics``.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.latency_family = pb_utils.MetricFamily(
            name="pitfall_value_duration_seconds",
            description="Compute time per request, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.latency = self.latency_family.Metric(labels={}, buckets=[0.001, 0.01, 0.1])

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.latency.observe(0.001)
            self.slow = self.latency.value() > 1  # WRONG: a histogram has no value()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
