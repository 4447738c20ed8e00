"""Pitfall: ``observe`` on a counter (a histogram call on the wrong kind).

Only a histogram observes. The model loads; the call fails in ``execute``
(Triton 2.51.0):

    TRITONSERVER_METRIC_KIND_COUNTER does not support Observe

or, measured on this server (2 runs in 10), aborts the whole server:
``terminate called after throwing an instance of
'boost::interprocess::lock_exception'``, ``Signal (6) received.`` A gauge's
``observe`` and a histogram's ``increment`` behave the same way.

Fix: ``observe`` on a histogram made with ``kind=pb_utils.MetricFamily.HISTOGRAM``
and ``buckets=[...]``.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.family = pb_utils.MetricFamily(
            name="pitfall_observe_duration_seconds",
            description="Compute time per request, in seconds",
            kind=pb_utils.MetricFamily.COUNTER,  # WRONG: a latency needs a HISTOGRAM
        )
        self.latency = self.family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.latency.observe(0.001)  # WRONG: counters have no observe
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
