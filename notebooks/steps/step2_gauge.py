"""Step 2 of building metrics_demo: step 1 + a gauge of the requests in flight.

``demo_inflight_requests`` goes up by the number of requests when ``execute``
receives them and down by one as each is done: it reads 0 when idle.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # Make each family once, when the model loads, and keep it on self.
        self.requests_family = pb_utils.MetricFamily(
            name="demo_requests_total",
            description="Requests handled by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.requests = self.requests_family.Metric(labels={})  # one series; no labels yet

        self.inflight_family = pb_utils.MetricFamily(
            name="demo_inflight_requests",
            description="Requests being computed by the model right now",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.inflight = self.inflight_family.Metric(labels={})

    def execute(self, requests):
        responses = []
        self.inflight.increment(len(requests))  # up by the requests handed over
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.inflight.increment(-1)  # down as each one is done
            self.requests.increment(1)  # every request counts (notebook 06: increment(len(requests)) per execute)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
