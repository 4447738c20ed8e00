"""Notebook 13's quality rules and exercise: docker/prometheus/rules/quality.yml and its unit tests catch what they
claim to catch, its thresholds keep their margins over the held-out set (recomputed here from the model), and
exercise 13's checker grades its solution and the shipped rule correct, known mistakes wrong with the right hint, and
an empty answer "not attempted".

promtool runs every rule test (quality_test.yml with the others) in test_prometheus_config.py; here the quality
tests run once more on purpose-broken copies of the rules, each of which must fail. The live run against a real
Triton is notebook 13 itself and test_prometheus_live.py.
"""

from __future__ import annotations

import ast
import json
import re
import shutil

import nbformat
import numpy as np
import onnxruntime as ort
import pytest
from scipy import ndimage

from labcheck import checks, quality
from labkit import paths
from labkit import prometheus as lp
from scripts import train_digits
from tests import monitoring_files as mf
from tests.conftest import require_tool

QUALITY_FILE = mf.RULES_DIR / "quality.yml"
QUALITY_TEST = mf.RULES_DIR.parent / "tests" / "quality_test.yml"
MODEL_DIR = paths.MODEL_REPOSITORY / "digits_classifier" / "1"
NOTEBOOK = paths.NOTEBOOKS / "13_model_quality_and_drift.ipynb"
ALERTS = {
    "DigitsConfidenceDropped": ("model:digits_prediction_confidence:mean_rate5m", "<"),
    "DigitsClassMixShifted": ("model:digits_predictions:class_mix_distance_rate5m", ">"),
    "DigitsInputDrift": ("model:digits_input_drift_score:share_above_p99_rate5m", ">"),
}
FLOOR = 'sum by (model) (increase(digits_predictions_total{job="triton"}[5m])) >= 300'
WINDOW = 300  # images: the traffic floor, the smallest window an alert may fire on


@pytest.fixture(scope="module")
def promtool():
    return require_tool("promtool", lp.INSTALL_HINT)


def quality_rules() -> dict[str, dict]:
    return {r.get("record") or r.get("alert"): r for r in mf.rules() if r["file"] == "quality.yml"}


def threshold(alert: str) -> float:
    record, sign = ALERTS[alert]
    match = re.search(rf"{re.escape(record)} {sign} ([0-9.]+)\n", quality_rules()[alert]["expr"])
    assert match, f"{alert}: expected '{record} {sign} <threshold>' in its expression"
    return float(match.group(1))


def model_constant(name: str):
    tree = ast.parse((MODEL_DIR / "model.py").read_text())
    return next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name
    )


# ------------------------------------------------------------------------------------------------- the rules


def test_alerts_need_their_signal_the_traffic_floor_and_ten_minutes():
    rules = quality_rules()
    assert set(ALERTS) <= set(rules)
    for alert, (record, sign) in ALERTS.items():
        rule = rules[alert]
        expr = " ".join(rule["expr"].split())
        assert expr == f"{record} {sign} {threshold(alert):g} and {FLOOR}", expr
        assert rule["for"] == "10m" and rule["labels"] == {"severity": "warning"}
        assert record in rules, f"{alert} reads {record}, which no rule of quality.yml records"


def test_one_group_so_alerts_read_the_same_evaluation():
    groups = mf.load_yaml(QUALITY_FILE)["groups"]
    assert len(groups) == 1
    names = [r.get("record") or r.get("alert") for r in groups[0]["rules"]]
    for alert, (record, _) in ALERTS.items():
        assert names.index(record) < names.index(alert)


def test_rules_read_bucket_bounds_the_model_has_as_triton_spells_them():
    """le="1" of the drift share is a bound of DRIFT_BUCKETS, written "1" (Triton's %g-like spelling)."""
    drift = model_constant("DRIFT_BUCKETS")
    confidence = model_constant("CONFIDENCE_BUCKETS")
    assert 1.0 in drift and {0.5, 0.9} <= set(confidence)
    for rule in quality_rules().values():
        for le in re.findall(r'le="([^"]+)"', rule["expr"]):
            assert le == "1" and float(le) in drift, rule


@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("no `for:`", "for: 10m", "for: 1m"),
        ("no traffic floor", ">= 300", ">= 1"),
        (
            "the gauge summed over instances",
            "avg by (model, class) (digits_training_class_share",
            "sum by (model, class) (digits_training_class_share",
        ),
        ("thresholds twice as loose", "> 0.2\n", "> 0.4\n"),
        ("no half in the distance", "0.5 * sum by (model) (", "sum by (model) ("),
    ],
)
def test_quality_unit_tests_catch_a_broken_rule(promtool, tmp_path, what, old, new):
    shutil.copytree(mf.RULES_DIR.parent, tmp_path / "prometheus")
    broken = tmp_path / "prometheus" / "rules" / "quality.yml"
    text = broken.read_text()
    assert old in text, what
    broken.write_text(text.replace(old, new))
    done = lp.promtool("test", "rules", str(tmp_path / "prometheus" / "tests" / "quality_test.yml"))
    assert done.returncode != 0, f"{what}: quality_test.yml still passes\n{done.stdout}"


def test_quality_unit_tests_pass_as_shipped(promtool):
    done = lp.promtool("test", "rules", str(QUALITY_TEST))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


# ------------------------------------------------------------------ thresholds against the held-out set


@pytest.fixture(scope="module")
def model():
    stats = json.loads((MODEL_DIR / "training_stats.json").read_text())
    session = ort.InferenceSession(str(MODEL_DIR / "digits.onnx"), providers=["CPUExecutionProvider"])
    training = np.array([stats["class_shares"][str(c)] for c in range(10)])
    means, stds = np.asarray(stats["feature_means"]), np.asarray(stats["feature_stds"])

    def signals(images):
        labels, probabilities = session.run(None, {"images": images})
        drift = train_digits.drift_distance(images, means, stds) / stats["drift_distance_p99"]
        return labels, probabilities.max(axis=1), drift

    return {"signals": signals, "training": training}


def summary(labels, confidence, drift, training) -> dict[str, float]:
    mix = np.bincount(labels, minlength=10) / len(labels)
    return {
        "DigitsConfidenceDropped": float(confidence.mean()),
        "DigitsClassMixShifted": float(0.5 * np.abs(mix - training).sum()),
        "DigitsInputDrift": float((drift > 1).mean()),
    }


def notebook_drifts() -> dict:
    """noisy, shifted and rotated as notebook 13 defines them (its cell run here, so the two cannot differ)."""
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    source = next(c.source for c in cells if c.cell_type == "code" and "def noisy(" in c.source)
    namespace = {"np": np, "ndimage": ndimage}
    exec(source.split("variants = ")[0], namespace)  # the definitions, not the figure
    return {name: namespace[name] for name in ("noisy", "shifted", "rotated")}


def test_thresholds_keep_their_margin_over_held_out_windows(model):
    """Windows of 300 held-out images (the floor), 20,000 of them: the worst 0.1% stay clear of each threshold
    by the margin quality.yml states: 0.01 under the confidence, a third under the class mix, 1/3 of the drift."""
    images, _ = train_digits.load_heldout()
    labels, confidence, drift = model["signals"](images)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, len(images), size=(20_000, WINDOW))
    mixes = np.eye(10)[labels][windows].mean(axis=1)
    worst_confidence = np.quantile(confidence[windows].mean(axis=1), 0.001)
    worst_mix = np.quantile(0.5 * np.abs(mixes - model["training"]).sum(axis=1), 0.999)
    worst_drift = np.quantile((drift[windows] > 1).mean(axis=1), 0.999)
    assert threshold("DigitsConfidenceDropped") <= worst_confidence - 0.01, worst_confidence
    assert threshold("DigitsClassMixShifted") >= 1.3 * worst_mix, worst_mix
    assert threshold("DigitsInputDrift") >= 3 * worst_drift, worst_drift
    # the figures of quality.yml's table, as they are rounded there
    held_out = summary(labels, confidence, drift, model["training"])
    table = QUALITY_FILE.read_text()
    assert f"mean confidence  {held_out['DigitsConfidenceDropped']:.3f}  " in table
    assert f"class mix dist.  {held_out['DigitsClassMixShifted']:.3f}  " in table
    assert f"drift share      {held_out['DigitsInputDrift']:.1%}  " in table
    assert f"{worst_confidence:.3f}" in table and f"{worst_drift:.1%}" in table
    assert round(worst_mix, 2) in (0.13, 0.14) and "0.14" in table


@pytest.mark.parametrize("drift", ["noisy", "shifted", "rotated"])
def test_every_drift_of_the_notebook_crosses_every_threshold(model, drift):
    images, _ = train_digits.load_heldout()
    values = summary(*model["signals"](notebook_drifts()[drift](images)), model["training"])
    assert values["DigitsConfidenceDropped"] < threshold("DigitsConfidenceDropped"), values
    assert values["DigitsClassMixShifted"] > threshold("DigitsClassMixShifted"), values
    assert values["DigitsInputDrift"] > threshold("DigitsInputDrift"), values


def test_a_quarter_turn_makes_the_model_surer_than_held_out(model):
    """quality.yml and notebook 13 say so: confidence alone cannot be the drift signal."""
    images, _ = train_digits.load_heldout()
    turned = np.rot90(images.reshape(-1, 8, 8), 1, axes=(1, 2)).reshape(-1, 64).copy()
    held_out = model["signals"](images)[1].mean()
    assert model["signals"](turned)[1].mean() > held_out


# ------------------------------------------------------------------------------------------------ exercise 13


def _distance(share: str, training: str = "avg by (model, class) (digits_training_class_share)") -> str:
    return f"0.5 * sum by (model) (abs({share} - on (model, class) {training}))"


RATE = "rate(digits_predictions_total[5m])"
SHARE = f"(sum by (model, class) ({RATE}) / ignoring (class) group_left sum by (model) ({RATE}))"
# known-wrong answers and what the checker must say about each
WRONG_13 = {
    _distance(SHARE.replace(RATE, "digits_predictions_total")): "running totals",
    f"sum by (model) (abs({SHARE} - on (model, class) avg by (model, class) (digits_training_class_share)))": "HALF",
    _distance(SHARE, "sum by (model, class) (digits_training_class_share)"): "doubled",
    f"0.5 * sum by (model) ({SHARE} - on (model, class) avg by (model, class) (digits_training_class_share))": "cancel",
    _distance(SHARE.replace("[5m]", "[1m]")): "last minute",
    _distance(SHARE.replace("[5m]", "[1h]")): "last hour",
    _distance(
        f"avg by (model, class) (sum by (model, instance, class) ({RATE}) / ignoring (class) group_left "
        f"sum by (model, instance) ({RATE}))"
    ): "small instance weighs as much",
    _distance(SHARE, "digits_training_class_share"): "aggregate it first",
    _distance(f"(sum by (model, class) ({RATE}) / sum by (model) ({RATE}))"): "returned nothing",
    f"abs({SHARE} - on (model, class) avg by (model, class) (digits_training_class_share))": "10 series",
    "sum(rate(digits_predictions_total[5m])": "refused the query",
    "sum(rate(digits_predictions_total[5m]))": "not the class-mix distance",
}


def test_13_solution_shipped_rule_right_variants_and_known_mistakes(promtool):
    solution = {}
    exec((paths.NOTEBOOKS / "solutions" / "13_class_mix_distance.py").read_text(), solution)  # what %load would run
    assert checks.check_13("").status == "not attempted"
    assert checks.check_13(["  ", ""]).status == "not attempted"
    shipped = quality_rules()["model:digits_predictions:class_mix_distance_rate5m"]["expr"]
    right = [
        solution["class_mix_distance_promql"],
        quality.REFERENCE_13,
        shipped,
        _distance(SHARE.replace("rate(", "increase("), "max by (model, class) (digits_training_class_share)"),
        "0.5 * sum(abs(sum by (class) (rate(digits_predictions_total[5m])) / scalar(sum(rate("
        "digits_predictions_total[5m]))) - min by (class) (digits_training_class_share)))",
    ]
    results = checks.check_13([*right, "", *WRONG_13])
    for answer, feedback in zip(right, results[: len(right)], strict=True):
        assert feedback.status == "correct", (answer, feedback)
    assert results[len(right)].status == "not attempted"
    for feedback, (answer, says) in zip(results[len(right) + 1 :], WRONG_13.items(), strict=True):
        assert feedback.status == "wrong" and says in feedback.message, (answer, feedback)


def test_13_histories_tell_every_known_mistake_apart(promtool):
    """Each mistake of the checker's list differs from the reference in some history, and no two agree everywhere."""
    answers = quality.evaluate_13([quality.REFERENCE_13, *(m for m, _ in quality.MISTAKES_13)])
    values = [tuple(round(samples[0][1], 9) for _, samples in answer) for answer in answers]
    assert len(set(values)) == len(values), values
    reference = dict(zip((s.name for s in quality.SCENARIOS_13), values[0], strict=True))
    assert reference["in distribution"] < 0.01 and reference["shifted earlier"] < 0.01
    assert reference["shifting now"] > 0.2 and 0.01 < reference["one small instance"] < 0.1


def test_13_histories_are_cumulative_counters_and_a_constant_gauge():
    for scenario in quality.SCENARIOS_13:
        series = quality.class_series(scenario)
        assert len(series) == 20 * len(scenario.instances)
        for s in series:
            assert len(s["values"]) == scenario.minutes + 1
            if s["name"] == "digits_predictions_total":
                assert all(b >= a for a, b in zip(s["values"], s["values"][1:], strict=False)), s["labels"]
            else:
                assert len(set(s["values"])) == 1
    assert sum(quality.TRAINING_SHARES) == pytest.approx(1) and sum(quality.SKEWED_SHARES) == pytest.approx(1)


def test_check_13_is_labcheck_checks_check_13():
    assert checks.check_13 is quality.check_13
