"""Exercise 13's checker: the class-mix distance of digits_classifier, written in PromQL.

The class mix is the share of each class among the model's predictions over the last 5 minutes; its
distance from training is the total variation distance ``0.5 * sum over classes |share - training share|``
(0: the same mix, 1: no class in common). The learner writes it from the raw series, the counter
``digits_predictions_total{class}`` and the gauge ``digits_training_class_share{class}`` (set once by
the model from its training data), for the model as a whole: every instance's predictions added up.

The query is run by Prometheus's own engine (``promtool test rules``, no server) at the end of four
known histories of two Triton instances, and must give the same single number as the reference in each.
``notebooks/solutions/13_class_mix_distance.py`` is a solution; the shipped recording rule
``model:digits_predictions:class_mix_distance_rate5m`` (docker/prometheus/rules/quality.yml) is another;
``tests/test_quality.py`` grades both, and known-wrong answers, through this checker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labcheck.slo import evaluate_scenarios

if TYPE_CHECKING:
    from labcheck.checks import Feedback

CLASSES = tuple(str(digit) for digit in range(10))
# sklearn's digits data set: 178, 182, 177, 183, 181, 182, 181, 179, 174, 180 images of 0..9 (1797 in all)
TRAINING_SHARES = (0.099, 0.101, 0.098, 0.102, 0.101, 0.101, 0.101, 0.1, 0.097, 0.1)
# what drifted images look like to the model: most land in a few classes (notebook 13, section 6)
SKEWED_SHARES = (0.05, 0.2, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.4, 0.05)
_COUNTER = "digits_predictions_total"
_GAUGE = "digits_training_class_share"
_LABELS = {"job": "triton", "model": "digits_classifier", "version": "1"}


def _distance(share: str, training: str) -> str:
    return f"0.5 * sum by (model) (abs({share} - on (model, class) {training}))"


def _share(window: str = "5m", counter: str = f"rate({_COUNTER}[5m])") -> str:
    counter = counter.replace("[5m]", f"[{window}]")
    return f"(sum by (model, class) ({counter}) / ignoring (class) group_left sum by (model) ({counter}))"


_TRAINING = f"avg by (model, class) ({_GAUGE})"
# the query the exercise asks for
REFERENCE_13 = _distance(_share(), _TRAINING)
# known mistakes, each with what to say about it
MISTAKES_13 = (
    (
        _distance(_share(counter=_COUNTER), _TRAINING),
        "that is the mix since the servers started (the counters' running totals), so a shift of the last minutes "
        "hardly shows and an old one never goes away: take rate(...[5m]) of the counter first.",
    ),
    (
        f"sum by (model) (abs({_share()} - on (model, class) {_TRAINING}))",
        "that is twice the distance: the total variation distance is HALF the sum of the differences "
        "(0.5 * sum ...), so that it runs from 0 (the same mix) to 1 (no class in common).",
    ),
    (
        _distance(_share(), f"sum by (model, class) ({_GAUGE})"),
        "the training shares come out doubled: each instance exports the same gauge, so summing it over the two "
        "instances adds them up; take one of them (avg by (model, class) or max by (model, class)).",
    ),
    (
        f"0.5 * sum by (model) ({_share()} - on (model, class) {_TRAINING})",
        "the differences cancel out (both mixes add up to 1, so their differences add up to 0): add up their "
        "sizes, abs(share - training share).",
    ),
    (
        _distance(_share("1m"), _TRAINING),
        "that is over the last minute: the mix is over the last 5 minutes, rate(...[5m]).",
    ),
    (
        _distance(_share("1h"), _TRAINING),
        "that is over the last hour: the mix is over the last 5 minutes, rate(...[5m]).",
    ),
    (
        _distance(
            f"avg by (model, class) (sum by (model, instance, class) (rate({_COUNTER}[5m])) / ignoring (class) "
            f"group_left sum by (model, instance) (rate({_COUNTER}[5m])))",
            _TRAINING,
        ),
        "that averages the instances' mixes, so a small instance weighs as much as a big one: add up the "
        "instances' rates per class first, sum by (model, class) (rate(...)), then divide by their sum.",
    ),
)


@dataclass(frozen=True)
class Scenario:
    """A history per instance: segments of (minutes, images per minute, class shares)."""

    name: str
    story: str
    instances: dict[str, tuple[tuple[int, int, tuple[float, ...]], ...]]

    @property
    def minutes(self) -> int:
        return sum(m for m, _, _ in next(iter(self.instances.values())))


SCENARIOS_13 = (
    Scenario(
        "in distribution",
        "two instances, 90 minutes at 600 images a minute each, in the training mix",
        {"a": ((90, 600, TRAINING_SHARES),), "b": ((90, 600, TRAINING_SHARES),)},
    ),
    Scenario(
        "shifting now",
        "87 minutes in the training mix, then 3 minutes of drifted images (40% predicted 8, 20% 1)",
        {
            "a": ((87, 600, TRAINING_SHARES), (3, 600, SKEWED_SHARES)),
            "b": ((87, 600, TRAINING_SHARES), (3, 600, SKEWED_SHARES)),
        },
    ),
    Scenario(
        "shifted earlier",
        "20 minutes of drifted images, then 70 minutes in the training mix",
        {
            "a": ((20, 600, SKEWED_SHARES), (70, 600, TRAINING_SHARES)),
            "b": ((20, 600, SKEWED_SHARES), (70, 600, TRAINING_SHARES)),
        },
    ),
    Scenario(
        "one small instance",
        "90 minutes: instance a at 60 images a minute, all drifted; b at 600 a minute in the training mix",
        {"a": ((90, 60, SKEWED_SHARES),), "b": ((90, 600, TRAINING_SHARES),)},
    ),
)


def class_series(scenario: Scenario) -> list[dict]:
    """The scenario's series, one sample a minute: the cumulative counter of each class and the
    training-share gauge, per instance. Each minute's images are split by the shares (rounded)."""
    series = []
    for instance, segments in scenario.instances.items():
        labels = {**_LABELS, "instance": f"{instance}:8002"}
        totals = [0] * len(CLASSES)
        history: list[list[int]] = [[0] for _ in CLASSES]
        for minutes, per_minute, shares in segments:
            step = [round(per_minute * share) for share in shares]
            for _ in range(minutes):
                for index, add in enumerate(step):
                    totals[index] += add
                    history[index].append(totals[index])
        for index, name in enumerate(CLASSES):
            series.append({"name": _COUNTER, "labels": {**labels, "class": name}, "values": history[index]})
            gauge = [TRAINING_SHARES[index]] * (scenario.minutes + 1)
            series.append({"name": _GAUGE, "labels": {**labels, "class": name}, "values": gauge})
    return series


def evaluate_13(queries: list[str]) -> list[list[tuple[str, list[tuple[str, float]]]]]:
    """Exercise 13's queries on its scenarios (see :func:`labcheck.slo.evaluate_scenarios`)."""
    return evaluate_scenarios(queries, SCENARIOS_13, class_series, "check-13")


def check_13(queries: str | list[str]) -> Feedback | list[Feedback]:
    """Exercise 13: the PromQL for the class-mix distance over the last 5 minutes.

    It must give one series, equal to :data:`REFERENCE_13`, at the end of each history of
    :data:`SCENARIOS_13`. Several queries can be graded at once by passing a list.
    """
    batch = [queries] if isinstance(queries, str) else list(queries)
    if not any(q.strip() for q in batch):
        return _feedback("not attempted", "Write the PromQL expression in the string, then run this check.")
    attempted = [q for q in batch if q.strip()]
    answers = iter(evaluate_13([REFERENCE_13, *(m for m, _ in MISTAKES_13), *attempted]))
    reference = _values(next(answers))
    if len(reference) != len(SCENARIOS_13) or None in reference:
        raise RuntimeError(f"exercise 13's own reference does not give one number per history: {reference}")
    mistakes = [(_values(next(answers)), hint) for _, hint in MISTAKES_13]
    results = [_grade_13(next(answers), reference, mistakes) if q.strip() else _grade_13(None, [], []) for q in batch]
    return results[0] if isinstance(queries, str) else results


def _values(answer) -> list[float | None]:
    """The one value per history of an answer (None where it gave no single series, or an error)."""
    return [samples[0][1] if not error and len(samples) == 1 else None for error, samples in answer]


def _same(values: list[float | None], other: list[float | None]) -> bool:
    return all(
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        for a, b in zip(values, other, strict=True)
    )


def _feedback(status: str, message: str) -> Feedback:
    # imported here, not at the top: labcheck.checks imports this module at its end (checks.check_13)
    from labcheck import checks

    return checks.Feedback("13", status, message)


def _grade_13(answer, reference: list[float], mistakes: list[tuple[list, str]]) -> Feedback:
    if answer is None:
        return _feedback("not attempted", "Write the PromQL expression in the string.")
    errors = [error for error, _ in answer if error]
    if errors:
        hint = ""
        if "duplicate series" in errors[0] or "many-to-many" in errors[0]:
            hint = (
                " The two instances each export the training-share gauge, so each class has two series of it: "
                "aggregate it first (avg by (model, class) (...)), then match on (model, class)."
            )
        return _feedback("wrong", f"Prometheus refused the query: {errors[0]}{hint}")
    counts = [len(samples) for _, samples in answer]
    if not any(counts):
        return _feedback(
            "wrong",
            "It returned nothing. Both sides of an operator must have the same labels to match: the per-class "
            "rates (model, class) divided by the total (model) need ignoring (class) group_left, and the shares "
            "minus the training shares need on (model, class) or the same labels on both sides.",
        )
    if max(counts) > 1:
        shown = next(samples for _, samples in answer if len(samples) > 1)
        labels = ", ".join(labels for labels, _ in shown[:3])
        return _feedback(
            "wrong",
            f"It returned {max(counts)} series ({labels}{', ...' if len(shown) > 3 else ''}); the distance is one "
            "number for the model: add up the classes' differences with sum by (model) (...).",
        )
    values = _values(answer)
    if _same(values, reference):
        said = ", ".join(f"{s.name} {v:.3f}" for s, v in zip(SCENARIOS_13, values, strict=True))
        return _feedback("correct", f"The class-mix distance of the last 5 minutes at the end of each history: {said}.")
    hint = next((h for v, h in mistakes if _same(values, v)), "not the class-mix distance of the last 5 minutes.")
    said = ", ".join(_shown(s, v, r) for s, v, r in zip(SCENARIOS_13, values, reference, strict=True))
    return _feedback("wrong", f"It gave {said}: {hint}")


def _shown(scenario: Scenario, value: float | None, right: float) -> str:
    if value is None:
        return f"{scenario.name}: nothing"
    if _same([value], [right]):
        return f"{scenario.name} {value + 0.0:.3f}"
    return f"{scenario.name} {value + 0.0:.3f} (not {right:.3f})"
