"""Pitfall: ``set`` on a counter.

Only a gauge can be set. The model loads; the call fails in ``execute``
(Triton 2.51.0):

    TRITONSERVER_METRIC_KIND_COUNTER does not support Set

and, measured on this server, such a refused call can also abort the whole
server (see notebook 07). Fix: a counter only goes up, by ``increment(v >= 0)``;
a number that is *set* is a gauge.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall_set_values_total",
            description="Values in the last request",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.values = self.family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.values.set(values.size)  # WRONG: a counter cannot be set
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
