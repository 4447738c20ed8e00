"""Every exercise: its solution is graded correct, known-wrong answers are graded wrong,
and an untouched exercise is "not attempted". Model answers run in a real Triton."""

from __future__ import annotations

import importlib.util

import pytest

from labcheck import checks
from labkit import paths

from .wrong_answers import answers as wrong

SOLUTIONS = paths.NOTEBOOKS / "solutions"

# Known-wrong answers to exercise 01: the solution with one mistake each.
WRONG_01 = {
    "counts_requests_not_values": (
        "self.values.increment(values.size)",
        "self.values.increment(1)",
        "not 113",
    ),
    "gauge_instead_of_counter": (
        'description="Input values received by the model",\n            kind=pb_utils.MetricFamily.COUNTER',
        'description="Input values received by the model",\n            kind=pb_utils.MetricFamily.GAUGE',
        "make it a COUNTER",
    ),
    "no_labels": ("Metric(labels=labels)", "Metric(labels={})", 'label model="metrics_demo"'),
    "invented_api": ("self.values.increment(values.size)", "self.values.inc(values.size)", "has no attribute 'inc'"),
}

pytestmark = pytest.mark.integration


def load(name: str, attribute: str):
    """A function from a solution file, imported the way %load would run it."""
    spec = importlib.util.spec_from_file_location(name, SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attribute)


# Known-wrong answers to exercise 01b: the solution with one mistake each.
WRONG_01B = {
    "gauge_with_buckets": (
        "kind=pb_utils.MetricFamily.HISTOGRAM",
        "kind=pb_utils.MetricFamily.GAUGE",
        "only a HISTOGRAM takes buckets=",
    ),
    "unsorted_buckets": ("SIZE_BUCKETS = [10, 100, 1000]", "SIZE_BUCKETS = [100, 10, 1000]", "strictly increasing"),
    "missing_bucket": ("SIZE_BUCKETS = [10, 100, 1000]", "SIZE_BUCKETS = [10, 1000]", "give buckets=[10, 100, 1000]"),
    "observes_one": ("self.sizes.observe(values.size)", "self.sizes.observe(1)", "observe values.size"),
    # value() on a histogram: the server refuses it, and on 2.51.0 may abort: graded wrong either way
    "value_on_histogram": (
        "self.sizes.observe(values.size)",
        "self.sizes.observe(values.size)\n            self.large = self.sizes.value() > 100",
        "make only the calls your metric's kind has",
    ),
}


def test_02():
    assert checks.check_02(load("02_metrics_flags", "metrics_flags")).status == "correct"
    assert checks.check_02(lambda port: []).status == "not attempted"
    feedback = checks.check_02(wrong.metrics_flags_all_interfaces)
    assert feedback.status == "wrong" and "bind 127.0.0.1" in feedback.message
    feedback = checks.check_02(wrong.metrics_flags_wrong_port)
    assert feedback.status == "wrong" and "Nothing listened on port" in feedback.message
    feedback = checks.check_02(wrong.metrics_flags_no_interval)
    assert feedback.status == "wrong" and "--metrics-interval-ms=250" in feedback.message


def test_03():
    assert checks.check_03(load("03_send_my_traffic", "send_my_traffic")).status == "correct"
    assert checks.check_03(lambda server: None).status == "not attempted"
    feedback = checks.check_03(wrong.send_wrong_shape)
    assert feedback.status == "wrong" and "refused by Triton before the model" in feedback.message
    assert checks.check_03(wrong.send_random_errors).status == "wrong"


def test_04():
    assert checks.check_04(load("04_error_ratio", "error_ratio")).status == "correct"
    assert checks.check_04(checks.error_ratio_reference).status == "correct"
    assert checks.check_04(lambda frame, window: None).status == "not attempted"
    for answer, says in (
        (wrong.error_ratio_error_over_success, "steady"),
        (wrong.error_ratio_totals, "history"),
        (wrong.error_ratio_naive_diff, "restart"),
    ):
        feedback = checks.check_04(answer)
        assert feedback.status == "wrong" and f"For the {says} frame" in feedback.message, feedback


def test_04b_plot_rate():
    import matplotlib.pyplot as plt

    from labkit import plots

    open_before = set(plt.get_fignums())
    assert checks.check_04b(load("04b_plot_rate", "plot_rate")).status == "correct"
    # labkit's own counter plot holds the same rate on its lower axes: also right
    assert checks.check_04b(lambda frame, window: plots.counter(frame, checks.SAMPLE_04B, window)).status == "correct"
    assert checks.check_04b(lambda frame, window: None).status == "not attempted"
    for answer, says in (
        (wrong.plot_rate_cumulative, "cumulative counter"),
        (wrong.plot_rate_bucket, "_bucket series summed over every le"),
        (wrong.plot_rate_sum, "rate of _sum"),
        (wrong.plot_rate_no_units, "Label the x axis with its unit"),
        (wrong.plot_rate_no_units, "Label the y axis with its unit"),
        (wrong.plot_rate_no_title, "title"),
        (lambda frame, window: frame, "returned DataFrame"),
        (lambda frame, window: plt.subplots()[1], "no line"),
    ):
        feedback = checks.check_04b(answer)
        assert feedback.status == "wrong" and says in feedback.message, (answer, feedback)
    assert set(plt.get_fignums()) == open_before, "the checker closes the figures it graded"


def test_05():
    solution = {}
    exec((SOLUTIONS / "05_error_ratio_promql.py").read_text(), solution)  # what %load would run
    assert checks.check_05("").status == "not attempted"
    wrong = {
        'sum(rate(demo_requests_total{outcome="error"}[10s]))'
        ' / sum(rate(demo_requests_total{outcome="success"}[10s]))': "errors / successes",
        'sum(demo_requests_total{outcome="error"}) / sum(demo_requests_total)': "since the server started",
        'sum(rate(demo_requests_total{outcome="error"}[10s]))': "a rate in requests per second",
        'rate(demo_requests_total{outcome="error"}[10s]) / ignoring(outcome) rate(demo_requests_total[10s])': "series",
        "sum(rate(demo_requests_total[10s]": "refused the query",
    }
    results = checks.check_05([solution["error_ratio_promql"], *wrong])
    assert results[0].status == "correct", results[0]
    for feedback, says in zip(results[1:], wrong.values(), strict=True):
        assert feedback.status == "wrong" and says in feedback.message, feedback


def test_06():
    solution = {}
    exec((SOLUTIONS / "06_buckets.py").read_text(), solution)
    assert checks.check_06(solution["buckets"]).status == "correct"
    assert checks.check_06([]).status == "not attempted"
    default_prometheus = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    for answer, says in (
        ([50, 100, 200, 400, 800], "milliseconds"),
        ([0.1, 0.05, 0.2, 0.4], "strictly increasing"),
        (default_prometheus, "Make 0.2 one of the bounds"),
        ([0.1, 0.2, 1.0], "p95 comes out"),
        ([round(0.01 * i, 2) for i in range(1, 41)], "lot of series"),
    ):
        feedback = checks.check_06(answer)
        assert feedback.status == "wrong" and says in feedback.message, (answer, feedback)


def test_07(tmp_path):
    assert checks.check_07(SOLUTIONS / "07_family_kept.py").status == "correct"
    untouched = tmp_path / "untouched.py"
    untouched.write_text(checks.TEMPLATE_07.read_text())
    assert checks.check_07(untouched).status == "not attempted"
    pitfall = checks.TEMPLATE_07.read_text()
    swallowed = pitfall.replace(
        "            self.requests.increment(1)  # raises: its family is gone\n",
        "            try:\n                self.requests.increment(1)\n"
        "            except Exception:\n                pass\n",
    )
    assert swallowed != pitfall
    for answer, says in ((pitfall + "\n# touched\n", "has been deleted"), (swallowed, "is not on /metrics")):
        path = tmp_path / "model.py"
        path.write_text(answer)
        feedback = checks.check_07(path)
        assert feedback.status == "wrong" and says in feedback.message, feedback


# Known-wrong answers to exercise 08: the solution with one mistake each.
WRONG_08 = {
    "observes_per_request": (
        "        self.rows.observe(sum(x.shape[0] for x in inputs))  # once per call: the batch, in rows\n",
        "        for x in inputs:\n            self.rows.observe(x.shape[0])\n",
        "observe once per execute() call, not once per request",
    ),
    "observes_requests_not_rows": (
        "self.rows.observe(sum(x.shape[0] for x in inputs))",
        "self.rows.observe(len(requests))",
        "observe the rows of the call",
    ),
    "latency_buckets": (
        "ROW_BUCKETS = [1, 2, 4, 8]",
        "ROW_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1]",
        "give buckets=[1, 2, 4, 8]",
    ),
}


def test_09():
    solution = {}
    exec((SOLUTIONS / "09_fleet_p95.py").read_text(), solution)  # what %load would run
    assert checks.check_09("").status == "not attempted"
    triton_buckets = 'demo_request_duration_seconds_bucket{namespace="triton"}'
    wrong = {
        f"avg(histogram_quantile(0.95, sum by (pod, le) (rate({triton_buckets}[1m]))))": "average of the pods' p95s",
        f"histogram_quantile(0.95, sum by (pod, le) (rate({triton_buckets}[1m])))": "returned 3 series",
        f"histogram_quantile(0.95, sum by (le) ({triton_buckets}))": "since the servers started",
        "histogram_quantile(0.95, sum by (le) (rate(demo_request_duration_seconds_bucket[1m])))": "staging",
        f"histogram_quantile(0.95, sum by (le) (rate({triton_buckets}[5m])))": "last 5 minutes",
        f"histogram_quantile(95, sum by (le) (rate({triton_buckets}[1m])))": "between 0 and 1",
        f"histogram_quantile(0.95, sum(rate({triton_buckets}[1m])))": "needs the le label",
        f"histogram_quantile(0.95, sum by (le) (rate({triton_buckets}[1m]))": "refused the query",
    }
    right = [
        solution["fleet_p95_promql"],
        f"histogram_quantile(0.95, sum(rate({triton_buckets}[1m])) by (le))",
        f"histogram_quantile(0.95, sum without (pod, instance) (rate({triton_buckets}[1m])))",
    ]
    results = checks.check_09([*right, *wrong])
    for feedback in results[: len(right)]:
        assert feedback.status == "correct", feedback
    for feedback, says in zip(results[len(right) :], wrong.values(), strict=True):
        assert feedback.status == "wrong" and says in feedback.message, feedback


def test_09_known_mistakes_give_distinct_answers():
    """Each hint of exercise 09 is told apart by its value: no two known mistakes (or the answer) may coincide."""
    answers = checks.evaluate_promql_09([checks.REFERENCE_09, *(query for query, _ in checks.MISTAKES_09)])
    values = [samples[0][1] for _, samples in answers]
    assert all(len(samples) == 1 for _, samples in answers)
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert abs(a - b) > 1e-3 * abs(a), values


# The exercises that are a model.py: (checker, solution file, template, known-wrong mutations of the solution,
# whether a mutation may abort the server at load instead: on 2.51.0 a refused call can, notebook 07 section 4).
MODEL_EXERCISES = {
    "01": (checks.check_01, "01_values_counter.py", checks.TEMPLATE_01, WRONG_01, False),
    "01b": (checks.check_01b, "01b_size_histogram.py", checks.TEMPLATE_01, WRONG_01B, True),
    "08": (checks.check_08, "08_execute_rows.py", checks.TEMPLATE_08, WRONG_08, True),
}


@pytest.mark.parametrize("exercise", sorted(MODEL_EXERCISES))
def test_model_exercise_solution_and_not_attempted(tmp_path, exercise):
    check, solution, template, _, _ = MODEL_EXERCISES[exercise]
    assert check(SOLUTIONS / solution).status == "correct"
    untouched = tmp_path / "model.py"
    untouched.write_text(template.read_text())
    assert check(untouched).status == "not attempted"


@pytest.mark.parametrize(
    ("exercise", "mistake"), [(e, m) for e, spec in sorted(MODEL_EXERCISES.items()) for m in sorted(spec[3])]
)
def test_model_exercise_wrong_answers(tmp_path, exercise, mistake):
    check, solution, _, mutations, may_abort = MODEL_EXERCISES[exercise]
    old, new, says = mutations[mistake]
    source = (SOLUTIONS / solution).read_text()
    assert old in source, "the mutation no longer applies to the solution"
    answer = tmp_path / "model.py"
    answer.write_text(source.replace(old, new))
    feedback = check(answer)
    assert feedback.status == "wrong", feedback
    assert says in feedback.message or (may_abort and checks.ABORTED_AT_LOAD in feedback.message), feedback
