"""Names from the wild next to the course's: what ``promtool check metrics`` says about each.

- ``requests_process_latency_ns``: the name the Python backend's own example
  (``examples/custom_metrics`` in triton-inference-server/python_backend) gives
  its counter of the cumulative time spent processing requests, in nanoseconds.
- ``app_processing_seconds_total``: the same counter named the Prometheus way:
  base unit (seconds), ``_total`` for a counter, an application prefix.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.example_family = pb_utils.MetricFamily(
            name="requests_process_latency_ns",
            description="Cumulative time spent processing requests",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.example = self.example_family.Metric(labels=labels)
        self.course_family = pb_utils.MetricFamily(
            name="app_processing_seconds_total",
            description="Cumulative time spent processing requests, in seconds",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.course = self.course_family.Metric(labels=labels)

    def execute(self, requests):
        responses = []
        start = time.perf_counter_ns()
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", np.sort(values).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        elapsed_ns = time.perf_counter_ns() - start
        self.example.increment(elapsed_ns)
        self.course.increment(elapsed_ns / 1e9)
        return responses
