"""Every request in the latency histogram, two ways: a native HISTOGRAM and the aggregated one.

Each request sleeps for a random time (log-normal, median about 1 ms), standing
in for model work, and the model observes the time it measured **twice**, with
the drop-in helper ``triton_metrics`` (copied next to this file when the
notebook builds its repository):

- ``every_native_request_duration_seconds``: a Triton HISTOGRAM, one ``observe``
  per request, so one round trip to the server per request;
- ``every_request_duration_seconds``: ``aggregate=True``, counted in this process
  and sent every ``FLUSH_S`` as ``_bucket`` (with ``le``), ``_sum`` and ``_count``
  counters; ``every_requests_total`` likewise.

Same buckets, same values: what ``histogram_quantile`` reads from the two must
agree once the last flush is in. ``OUTPUT0`` is the measured time, so the client
has every exact value. ``finalize`` sends what the last interval recorded.
"""

import time

import numpy as np
import triton_metrics as tm
import triton_python_backend_utils as pb_utils

FLUSH_S = 1.0
BUCKETS = [0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025]


class TritonPythonModel:
    def initialize(self, args):
        tm.init(args, flush_interval_s=FLUSH_S)
        self.rng = np.random.default_rng(12)
        self.native = tm.Histogram(
            "every_native_request_duration_seconds", "Model time per request (native histogram)", buckets=BUCKETS
        )
        self.latency = tm.Histogram(
            "every_request_duration_seconds", "Model time per request (aggregated)", buckets=BUCKETS, aggregate=True
        )
        self.requests = tm.Counter("every_requests_total", "Requests handled (aggregated)", aggregate=True)

    def execute(self, requests):
        responses = []
        for _ in requests:
            start = time.perf_counter()
            time.sleep(float(self.rng.lognormal(mean=np.log(0.001), sigma=0.5)))
            seconds = time.perf_counter() - start
            self.latency.observe(seconds)  # in this process: well under a microsecond
            self.requests.inc()
            self.native.observe(seconds)  # a round trip to the server
            out = pb_utils.Tensor("OUTPUT0", np.array([seconds], dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def finalize(self):
        tm.close()  # stop the flush thread and send what the last interval recorded
