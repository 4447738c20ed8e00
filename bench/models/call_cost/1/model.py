"""call_cost: how long one metric call takes, measured inside the model.

A request carries ``CALLS`` = N. The model makes N calls of each kind, in turn
(one of each, N times, so a slow moment of the machine hits every kind alike),
times each one with ``time.perf_counter()`` and returns ``SECONDS``, shape
``[len(KINDS), N]``. The ``perf_counter`` row is the cost of timing an empty
call: the floor under every other row.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

KINDS = ("perf_counter", "increment", "set", "observe")


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.counter_family = pb_utils.MetricFamily(
            name="cost_calls_total", description="Counter the benchmark increments", kind=pb_utils.MetricFamily.COUNTER
        )
        self.gauge_family = pb_utils.MetricFamily(
            name="cost_value", description="Gauge the benchmark sets", kind=pb_utils.MetricFamily.GAUGE
        )
        self.histogram_family = pb_utils.MetricFamily(
            name="cost_observation_seconds",
            description="Histogram the benchmark observes",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.counter = self.counter_family.Metric(labels=labels)
        self.gauge = self.gauge_family.Metric(labels=labels)
        self.histogram = self.histogram_family.Metric(labels=labels, buckets=[0.001, 0.01, 0.1])

    def execute(self, requests):
        responses = []
        for request in requests:
            calls = int(pb_utils.get_input_tensor_by_name(request, "CALLS").as_numpy().reshape(-1)[0])
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SECONDS", self.time(calls))]))
        return responses

    def time(self, calls: int) -> np.ndarray:
        seconds = np.zeros((len(KINDS), calls), dtype=np.float64)
        clock = time.perf_counter
        counter, gauge, histogram = self.counter, self.gauge, self.histogram
        for i in range(calls):
            t0 = clock()
            t1 = clock()
            counter.increment(1)
            t2 = clock()
            gauge.set(i)
            t3 = clock()
            histogram.observe(0.005)
            t4 = clock()
            seconds[:, i] = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        return seconds
