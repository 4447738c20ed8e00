"""dropin_probe: exercises triton_metrics inside a real Triton, one scenario per request.

The request's ``SCENARIO`` names a method below; ``RESULT`` is its return
value as JSON. The test copies ``dropin/triton_metrics.py`` next to this file.
"""

import gc
import json
import threading

import numpy as np
import triton_metrics as tm
import triton_python_backend_utils as pb_utils

THREADS, CALLS = 12, 400  # the threads scenario: each thread makes CALLS rounds of calls


def error_of(make) -> str:
    """The type and message of the ValueError or TypeError that ``make()`` raises ('' if it raises nothing)."""
    try:
        make()
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return ""


class TritonPythonModel:
    def initialize(self, args):
        self.defaults = tm.init(args, region="test", flush_interval_s=0.01)  # flush often: races with the calls
        self.calls = tm.Counter("probe_calls_total", "Calls, by kind", ["kind"])
        self.plain = tm.Counter("probe_plain_total", "A counter without labels")
        self.level = tm.Gauge("probe_level", "A gauge")
        self.duration = tm.Histogram("probe_duration_seconds", "A histogram", buckets=[0.001, 0.01, 0.1, 1.0])
        self.small = tm.Counter("probe_small_total", "At most 3 series", ["user"], max_series=3)
        self.summed = tm.Counter("probe_summed_total", "An aggregated counter", ["kind"], aggregate=True)
        self.spread = tm.Histogram(
            "probe_spread_seconds", "An aggregated histogram", buckets=[0.001, 0.01, 0.1, 1.0], aggregate=True
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "SCENARIO").as_numpy().reshape(-1)[0].decode()
            result = json.dumps(getattr(self, "scenario_" + name)())
            out = pb_utils.Tensor("RESULT", np.array([result.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def scenario_defaults(self):
        return self.defaults

    def scenario_errors(self):
        """Every mistake the helper catches, made inside Triton."""
        return {
            "bad_name": error_of(lambda: tm.Counter("2fast_total", "x")),
            "no_total": error_of(lambda: tm.Counter("probe_requests", "x")),
            "ms_unit": error_of(lambda: tm.Histogram("probe_latency_ms", "x")),
            "camel": error_of(lambda: tm.Gauge("probeLevel", "x")),
            "bad_label": error_of(lambda: tm.Counter("probe_a_total", "x", ["bad-label"])),
            "le_label": error_of(lambda: tm.Histogram("probe_le_seconds", "x", ["le"])),
            "default_label": error_of(lambda: tm.Counter("probe_c_total", "x", ["model"])),
            "label_string": error_of(lambda: tm.Counter("probe_label_total", "x", "outcome")),
            "buckets": error_of(lambda: tm.Histogram("probe_e_seconds", "x", buckets=[0.1, 0.05])),
            "no_help": error_of(lambda: tm.Gauge("probe_f", "")),
            "redefined": error_of(lambda: tm.Counter("probe_calls_total", "Other help", ["kind"])),
            "wrong_labels": error_of(lambda: self.calls.labels(knd="a")),
            "labels_needed": error_of(lambda: self.calls.inc()),
            "negative": error_of(lambda: self.plain.inc(-1)),
            "too_many_series": error_of(lambda: [self.small.labels(user=str(i)).inc() for i in range(4)]),
            # bad values and labels at the call: a Python error, never a call the server refuses
            "label_value_int": error_of(lambda: self.calls.labels(kind=200)),
            "label_value_none": error_of(lambda: self.calls.labels(None)),
            "default_label_value": error_of(lambda: tm.init(None, region=3)),
            "inc_string": error_of(lambda: self.plain.inc("1")),
            "inc_nan": error_of(lambda: self.plain.inc(float("nan"))),
            "set_string": error_of(lambda: self.level.set("high")),
            "observe_nan": error_of(lambda: self.duration.observe(float("nan"))),
            "observe_none": error_of(lambda: self.duration.observe(None)),
            "aggregated_negative": error_of(lambda: self.spread.observe(-0.5)),
            "aggregated_inc_negative": error_of(lambda: self.summed.labels(kind="x").inc(-2)),
            "bucket_layout_string": error_of(lambda: tm.Histogram("probe_g_seconds", "x", buckets="fast")),
            "bucket_layout_number": error_of(lambda: tm.Histogram("probe_i_seconds", "x", buckets=0.5)),
            "bucket_layout_other": error_of(
                lambda: tm.Histogram("probe_duration_seconds", "A histogram", buckets=[0.001, 0.01, 0.1, 2.0])
            ),
            "aggregate_other": error_of(
                lambda: tm.Histogram(
                    "probe_duration_seconds", "A histogram", buckets=[0.001, 0.01, 0.1, 1.0], aggregate=True
                )
            ),
            "aggregated_name_taken": error_of(
                lambda: tm.Gauge("probe_spread_seconds_bucket", "A histogram's series", conventions=False)
            ),
        }

    def scenario_gather(self):
        """Inside gather() the server's value does not move; at the end it moves by the sum, once."""
        series = self.calls.labels(kind="gathered")
        raw = series._metric  # the pb_utils Metric behind the series
        before = raw.value()
        with tm.gather():
            for _ in range(5):
                series.inc()
            series.inc(2.5)
            with tm.gather():  # nested: the outer block sends
                series.inc()
            inside = raw.value()
        after = raw.value()
        return {"before": before, "inside": inside, "after": after}

    def scenario_immediate(self):
        """Outside gather() every inc() reaches the server at once."""
        series = self.calls.labels(kind="immediate")
        before = series._metric.value()
        series.inc(3)
        return {"moved": series._metric.value() - before}

    def scenario_threads(self):
        """THREADS threads (this one too) x CALLS rounds of every kind of call, while the flush thread flushes.

        Each round: an immediate counter inc() (every 4th round inside gather()), a gauge inc() and dec(),
        a native histogram observe(), an aggregated counter inc() and an aggregated histogram observe(),
        on label values that threads share and that some threads create as they go.
        """
        errors = []
        start = threading.Barrier(THREADS)

        def work(index):
            try:
                start.wait()
                for i in range(CALLS):
                    kind = f"thread{(index + i) % 3}"
                    if i % 4 == 0:
                        with tm.gather():
                            self.calls.labels(kind=kind).inc()
                    else:
                        self.calls.labels(kind=kind).inc()
                    self.level.inc()
                    self.level.dec()
                    self.duration.observe(0.005)
                    self.summed.labels(kind=kind).inc()
                    self.spread.observe(0.05 if i % 2 else 0.0005)
            except Exception as err:  # reported to the test, which fails on it
                errors.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(1, THREADS)]
        for thread in threads:
            thread.start()
        work(0)
        for thread in threads:
            thread.join()
        tm.flush()
        return {"threads": THREADS, "calls": CALLS, "errors": errors}

    def scenario_gauge_and_timer(self):
        self.level.set(10)
        self.level.inc(5)
        self.level.dec(2)
        with self.level.track_inprogress():
            inside = self.level.value()
        with self.duration.time() as timer:
            sum(range(1000))
        return {"value": self.level.value(), "inside": inside, "elapsed_s": timer.elapsed_s}

    def scenario_families_alive(self):
        """A helper metric whose objects are all dropped keeps working; a bare pb_utils one does not."""

        def helper_series():
            return tm.Counter("probe_orphan_total", "Made and dropped").labels()

        series = helper_series()
        gc.collect()
        series.inc()

        def raw_metric():
            family = pb_utils.MetricFamily(
                name="probe_raw_orphan_total", description="x", kind=pb_utils.MetricFamily.COUNTER
            )
            return family.Metric(labels={})

        metric = raw_metric()
        gc.collect()
        try:
            metric.increment(1)
            raw_error = ""
        except Exception as err:  # pb_utils raises its own error type
            raw_error = str(err)
        return {"helper_value": series._metric.value(), "raw_error": raw_error}
