"""metrics_helper_demo: metrics_demo's work and metrics, written with ``triton_metrics``.

In your own model, copy ``dropin/triton_metrics.py`` next to ``model.py`` and
write ``import triton_metrics as tm``. This course keeps one copy of the helper,
in ``dropin/`` beside ``model_repository/``; so when none is next to this file
(as here, in place), the import below finds it there: ``<repository>/../dropin``,
which is the checkout's ``dropin/`` locally, and ``/dropin`` in Docker (the
repository is ``/models``; ``docker/compose.yaml``, ``docker/run_triton.sh`` and
``labkit.triton.start(mode="docker")`` mount ``dropin/`` there).
``labkit.repository.copy_reference`` puts a copy next to ``model.py``. The model takes a 1-D FP32 tensor ``INPUT0``
and returns ``OUTPUT0``, each value's mean absolute difference to all values,
like ``metrics_demo``, and reports (all with ``model`` and ``version`` labels):

- ``helper_requests_total{outcome="success"|"error"}`` (counter): increments are
  gathered over one ``execute`` call and sent once per outcome;
- ``helper_inflight_requests`` (gauge): requests being computed right now;
- ``helper_request_duration_seconds`` (histogram): compute time per successful request.
"""

import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

try:
    import triton_metrics as tm  # next to model.py: the layout of your own model
except ModuleNotFoundError:  # this course's single copy: <repository>/../dropin
    sys.path.append(str(Path(__file__).resolve().parents[3] / "dropin"))
    import triton_metrics as tm

MAX_ELEMENTS = 4096
LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]


class TritonPythonModel:
    def initialize(self, args):
        tm.init(args)  # model and version labels on every series
        self.requests = tm.Counter("helper_requests_total", "Requests handled by the model, by outcome", ["outcome"])
        self.inflight = tm.Gauge("helper_inflight_requests", "Requests being computed by the model right now")
        self.latency = tm.Histogram(
            "helper_request_duration_seconds",
            "Time the model spends computing one request, in seconds",
            buckets=LATENCY_BUCKETS,
        )
        # both series exist from the start, at 0, so rate() works from the first scrape
        self.success = self.requests.labels(outcome="success")
        self.error = self.requests.labels(outcome="error")

    @tm.gather()  # the counter increments below become one call per outcome per execute()
    def execute(self, requests):
        responses = []
        self.inflight.inc(len(requests))
        for request in requests:
            try:
                values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                check(values)
            except Exception as err:  # bad input (or a bug): an error response, never a crash
                self.inflight.dec()
                self.error.inc()
                error = pb_utils.TritonError(f"metrics_helper_demo: {err}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            with self.latency.time():
                result = np.abs(values[:, None] - values[None, :]).mean(axis=1, dtype=np.float32)
            self.inflight.dec()
            self.success.inc()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses


def check(values: np.ndarray) -> None:
    """Raise ValueError unless ``values`` is a 1-D tensor of 1 to MAX_ELEMENTS finite values."""
    if values.ndim != 1:
        raise ValueError(f"INPUT0 must be 1-D, got shape {list(values.shape)}")
    if not 0 < values.size <= MAX_ELEMENTS:
        raise ValueError(f"INPUT0 has {values.size} values; send 1 to {MAX_ELEMENTS}")
    if not np.isfinite(values).all():
        raise ValueError("INPUT0 contains NaN or infinity")
