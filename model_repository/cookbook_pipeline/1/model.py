"""cookbook_pipeline: a BLS pipeline that times and counts each of its steps.

For each request: step ``normalize`` (BLS call to ``cookbook_normalize``), step
``score`` (BLS call to ``cookbook_score``), step ``postprocess`` (here, in
Python). Metrics (labels ``model``, ``version``, and ``step``):

- ``cookbook_pipeline_step_duration_seconds{step}`` (histogram): time of each
  step that succeeded;
- ``cookbook_pipeline_step_errors_total{step}`` (counter): failures per step;
  the request gets an error response naming the step;
- ``cookbook_pipeline_requests_total{outcome="success"|"error"}`` (counter).

Every series is created in ``initialize``, so each step's error counter is on
``/metrics`` at 0 before the first failure (``rate()`` needs a series to exist
before it moves).
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

STEPS = ("normalize", "score", "postprocess")
STEP_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]


class StepError(Exception):
    """A step failed; ``step`` says which."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step}: {message}")
        self.step = step


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.duration_family = pb_utils.MetricFamily(
            name="cookbook_pipeline_step_duration_seconds",
            description="Time of each successful pipeline step, in seconds",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.errors_family = pb_utils.MetricFamily(
            name="cookbook_pipeline_step_errors_total",
            description="Pipeline step failures, by step",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.duration = {
            s: self.duration_family.Metric(labels={**labels, "step": s}, buckets=STEP_BUCKETS) for s in STEPS
        }
        self.errors = {s: self.errors_family.Metric(labels={**labels, "step": s}) for s in STEPS}
        self.requests_family = pb_utils.MetricFamily(
            name="cookbook_pipeline_requests_total",
            description="Pipeline requests handled, by outcome",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.success = self.requests_family.Metric(labels={**labels, "outcome": "success"})
        self.failure = self.requests_family.Metric(labels={**labels, "outcome": "error"})

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            try:
                normalized = self.timed("normalize", call_model, "cookbook_normalize", values)
                score = self.timed("score", call_model, "cookbook_score", normalized)
                result = self.timed("postprocess", postprocess, score)
            except StepError as err:
                self.errors[err.step].increment(1)
                self.failure.increment(1)
                error = pb_utils.TritonError(f"cookbook_pipeline: {err}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            self.success.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses

    def timed(self, step, function, *args):
        """Run one step; observe its time if it succeeds, raise StepError if it fails."""
        start = time.perf_counter()
        try:
            result = function(*args)
        except StepError:
            raise
        except Exception as err:  # a bug in a local step counts as that step's error
            raise StepError(step, f"{type(err).__name__}: {err}") from err
        self.duration[step].observe(time.perf_counter() - start)
        return result


def call_model(model_name: str, values: np.ndarray) -> np.ndarray:
    """One BLS call: INPUT0 in, OUTPUT0 out; an error response becomes a StepError."""
    step = model_name.removeprefix("cookbook_")
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        requested_output_names=["OUTPUT0"],
        inputs=[pb_utils.Tensor("INPUT0", values.astype(np.float32))],
    )
    response = request.exec()
    if response.has_error():
        raise StepError(step, response.error().message())
    return pb_utils.get_output_tensor_by_name(response, "OUTPUT0").as_numpy()


def postprocess(score: np.ndarray) -> np.ndarray:
    """Round the score and add a positive/negative flag."""
    value = float(score.reshape(-1)[0])
    if not np.isfinite(value):
        raise ValueError(f"score is {value}")
    return np.array([round(value, 3), 1.0 if value > 0 else 0.0], dtype=np.float32)
