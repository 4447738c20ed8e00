"""bench_model: OUTPUT0 = 2 * INPUT0, with one of six ways of reporting metrics.

The ``metrics`` parameter of ``config.pbtxt`` picks the variant; everything
else is the same code, so the difference in throughput is the metrics' cost:

- ``none``: no metrics (the baseline).
- ``naive``: per request, one counter ``increment(1)`` and one histogram
  ``observe`` of that request's time: 2 calls per request.
- ``recommended``: per ``execute`` call, one counter ``increment(len(requests))``
  and one histogram ``observe`` of the whole call's time: 2 calls per batch.
- ``helper``: the recommended pattern written with the drop-in ``triton_metrics``
  (``gather()`` adds up the per-request ``inc()`` calls; ``time()`` times execute).
- ``thread``: the naive calls, handed to a background thread through a queue.
- ``aggregated``: per request, a counter ``inc()`` and a histogram ``observe`` of that
  request's time, both with the drop-in helper's ``aggregate=True``: recorded in this
  process (no round trip) and sent to Triton every ``flush_s`` seconds by a background
  thread (the histogram as ``_bucket``/``_sum``/``_count`` counters).

``triton_metrics.py`` (``helper``, ``aggregated``) is copied next to this file
when the bench builds its repository (``bench.run.build_repository``).

``work_us`` adds that many microseconds of simulated work (``time.sleep``) per
``execute`` call, standing in for a model that waits on an accelerator.
"""

import json
import queue
import threading
import time

import triton_python_backend_utils as pb_utils

VARIANTS = ("none", "naive", "recommended", "helper", "thread", "aggregated")
BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.variant = params.get("metrics", "none")
        if self.variant not in VARIANTS:
            raise ValueError(f"parameter metrics={self.variant!r}; expected one of {VARIANTS}")
        self.work_s = float(params.get("work_us", "0")) / 1e6
        labels = {"model": args["model_name"], "version": args["model_version"]}
        if self.variant == "helper":
            import triton_metrics as tm

            self.tm = tm
            tm.init(args)
            self.h_requests = tm.Counter("bench_requests_total", "Requests handled")
            self.h_latency = tm.Histogram("bench_execute_duration_seconds", "Time per execute call", buckets=BUCKETS)
        elif self.variant == "aggregated":
            import triton_metrics as tm

            self.tm = tm
            tm.init(args, flush_interval_s=float(params.get("flush_s", "1")))
            self.a_requests = tm.Counter("bench_requests_total", "Requests handled", aggregate=True)
            self.a_latency = tm.Histogram(
                "bench_aggregated_request_duration_seconds", "Time per request", buckets=BUCKETS, aggregate=True
            )
        elif self.variant != "none":
            self.requests_family = pb_utils.MetricFamily(
                name="bench_requests_total", description="Requests handled", kind=pb_utils.MetricFamily.COUNTER
            )
            self.requests_total = self.requests_family.Metric(labels=labels)
            per_request = self.variant in ("naive", "thread")
            self.latency_family = pb_utils.MetricFamily(
                name="bench_request_duration_seconds" if per_request else "bench_execute_duration_seconds",
                description="Time per request" if per_request else "Time per execute call",
                kind=pb_utils.MetricFamily.HISTOGRAM,
            )
            self.latency = self.latency_family.Metric(labels=labels, buckets=BUCKETS)
        if self.variant == "thread":
            self.queue = queue.SimpleQueue()
            self.worker = threading.Thread(target=self._report, daemon=True)
            self.worker.start()

    def _report(self):
        """Background thread of the ``thread`` variant: makes the metric calls execute() queued."""
        while True:
            seconds = self.queue.get()
            if seconds is None:
                return
            self.requests_total.increment(1)
            self.latency.observe(seconds)

    def execute(self, requests):
        if self.variant == "helper":
            with self.tm.gather(), self.h_latency.time():
                return self._execute(requests)
        start = time.perf_counter()
        responses = self._execute(requests)
        if self.variant == "recommended":
            self.requests_total.increment(len(requests))
            self.latency.observe(time.perf_counter() - start)
        return responses

    def _execute(self, requests):
        if self.work_s:
            time.sleep(self.work_s)
        responses = []
        for request in requests:
            started = time.perf_counter()
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", values * 2)]))
            if self.variant == "naive":
                self.requests_total.increment(1)
                self.latency.observe(time.perf_counter() - started)
            elif self.variant == "thread":
                self.queue.put(time.perf_counter() - started)
            elif self.variant == "helper":
                self.h_requests.inc()
            elif self.variant == "aggregated":
                self.a_requests.inc()
                self.a_latency.observe(time.perf_counter() - started)
        return responses

    def finalize(self):
        if self.variant == "aggregated":
            self.tm.close()  # send what the last interval recorded
        if self.variant == "thread":
            self.queue.put(None)
            self.worker.join(timeout=5)
