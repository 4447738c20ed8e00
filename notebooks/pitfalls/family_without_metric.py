"""Pitfall: a MetricFamily with no Metric yet is not on /metrics at all.

The error counter's Metric is made lazily, on the first error. Until then the
family has no Metric, and ``/metrics`` has no line for it, not even ``# HELP``:
a dashboard shows "No data" and an alert on the error rate has nothing to
evaluate, instead of a clean 0.

Fix: make every Metric you will need in ``initialize`` (one per label set), so
each series is on ``/metrics`` from the start, at 0.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.errors_family = pb_utils.MetricFamily(
            name="pitfall_lazy_errors_total",
            description="Requests rejected by the model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.errors = None  # WRONG: made only when the first error happens

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if values.size == 0 or not np.isfinite(values).all():
                if self.errors is None:
                    self.errors = self.errors_family.Metric(labels={})
                self.errors.increment(1)
                error = pb_utils.TritonError("INPUT0 is empty or contains NaN or infinity")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
