"""Every exercise: its solution is graded correct, known-wrong answers are graded wrong,
and an untouched exercise is "not attempted". Model answers run in a real Triton."""

from __future__ import annotations

import importlib.util

import pytest

from labkit import checks, paths

from .wrong_answers import answers as wrong

SOLUTIONS = paths.NOTEBOOKS / "solutions"
SOLUTION_01 = (SOLUTIONS / "01_values_counter.py").read_text()

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


def test_01_solution_and_not_attempted(tmp_path):
    assert checks.check_01(SOLUTIONS / "01_values_counter.py").status == "correct"
    untouched = tmp_path / "model.py"
    untouched.write_text(checks.TEMPLATE_01.read_text())
    assert checks.check_01(untouched).status == "not attempted"


@pytest.mark.parametrize("mistake", sorted(WRONG_01))
def test_01_wrong_answers(tmp_path, mistake):
    old, new, says = WRONG_01[mistake]
    assert old in SOLUTION_01, "the mutation no longer applies to the solution"
    answer = tmp_path / "model.py"
    answer.write_text(SOLUTION_01.replace(old, new))
    feedback = checks.check_01(answer)
    assert feedback.status == "wrong"
    assert says in feedback.message


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
