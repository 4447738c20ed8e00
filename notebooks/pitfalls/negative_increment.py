"""Pitfall: a counter moved down.

A counter only goes up. Moving it by a negative amount fails in ``execute``
(Triton 2.51.0):

    TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by non-negative values.

and, measured on this server, such a refused call can also abort the whole
server (see notebook 07). Fix: a value that goes up and down (requests in
flight, queue length) is a GAUGE.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall_inflight_total",
            description="Requests being computed",
            kind=pb_utils.MetricFamily.COUNTER,  # WRONG: in-flight goes down too: a GAUGE
        )
        self.inflight = self.family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.inflight.increment(1)
            self.inflight.increment(-1)  # WRONG: a counter cannot go down
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
