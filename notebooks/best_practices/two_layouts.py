"""One latency, two bucket layouts: how much do bucket edges cost a quantile?

Each request sleeps for a random time (log-normal, median about 4 ms: the shape
of real latencies, a long right tail), standing in for model work. The model
observes the time it measured in two histograms that differ only in their
buckets, and returns that time as ``OUTPUT0``, so the client has every exact value.

- ``layout_default_seconds``: prometheus_client's default buckets (5 ms to 10 s),
  what you get when you do not choose.
- ``layout_slo_seconds``: buckets chosen around this model's objective,
  "95 % of requests within 10 ms": dense from 1 ms to 20 ms, one edge exactly at 10 ms.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
SLO_BUCKETS = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.rng = np.random.default_rng(6)
        self.families = []
        self.histograms = []
        for name, buckets in (("layout_default_seconds", DEFAULT_BUCKETS), ("layout_slo_seconds", SLO_BUCKETS)):
            family = pb_utils.MetricFamily(
                name=name, description=f"Model time per request, {name} buckets", kind=pb_utils.MetricFamily.HISTOGRAM
            )
            self.families.append(family)  # keep the families alive
            self.histograms.append(family.Metric(labels=labels, buckets=buckets))

    def execute(self, requests):
        responses = []
        for _ in requests:
            start = time.perf_counter()
            time.sleep(float(self.rng.lognormal(mean=np.log(0.004), sigma=0.5)))
            seconds = time.perf_counter() - start
            for histogram in self.histograms:
                histogram.observe(seconds)
            out = pb_utils.Tensor("OUTPUT0", np.array([seconds], dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
