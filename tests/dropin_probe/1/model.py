"""dropin_probe: exercises triton_metrics inside a real Triton, one scenario per request.

The request's ``SCENARIO`` names a method below; ``RESULT`` is its return
value as JSON. The test copies ``dropin/triton_metrics.py`` next to this file.
"""

import gc
import json

import numpy as np
import triton_metrics as tm
import triton_python_backend_utils as pb_utils


def error_of(make) -> str:
    """The message of the ValueError that ``make()`` raises ('' if it raises nothing)."""
    try:
        make()
    except ValueError as err:
        return str(err)
    return ""


class TritonPythonModel:
    def initialize(self, args):
        self.defaults = tm.init(args, region="test")
        self.calls = tm.Counter("probe_calls_total", "Calls, by kind", ["kind"])
        self.plain = tm.Counter("probe_plain_total", "A counter without labels")
        self.level = tm.Gauge("probe_level", "A gauge")
        self.duration = tm.Histogram("probe_duration_seconds", "A histogram", buckets=[0.001, 0.01, 0.1, 1.0])
        self.small = tm.Counter("probe_small_total", "At most 3 series", ["user"], max_series=3)

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
