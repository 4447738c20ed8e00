"""Exercise 10's checker: the fast-burn page of a stricter latency SLO, written in PromQL.

The objective: 99.5% of successful requests computed within 10 ms (``le="0.01"``, one of
metrics_demo's bucket bounds), over 30 days. Its budget is 1 - 0.995 = 0.005, so the fast-burn
page (the SRE workbook's 1h/5m pair at burn rate 14.4) fires while more than 14.4 x 0.005 = 7.2%
of requests took over 10 ms over both the last hour and the last 5 minutes.

The learner's condition is run by Prometheus's own engine (``promtool test rules``, the same
PromQL code as the server, no server needed) on six known histories, each ending at the moment
it is judged: where the page must fire, and where it must not. It runs in about a second.
``notebooks/solutions/10_latency_fast_burn.py`` is a solution; ``tests/test_slo.py`` grades it
and known-wrong answers through this checker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labcheck.checks import Feedback

OBJECTIVE_S = 0.01  # seconds: a bucket bound of metrics_demo (model_repository/metrics_demo/1/model.py)
TARGET = 0.995
THRESHOLD = 14.4 * (1 - TARGET)  # 0.072: 2% of a 30-day budget spent in 1 h
_FAMILY = "demo_request_duration_seconds"
_LABELS = {"job": "triton", "model": "metrics_demo", "version": "1"}


def _bad_share(window: str) -> str:
    return (
        f'1 - sum by (model) (rate({_FAMILY}_bucket{{le="0.01"}}[{window}]))'
        f" / sum by (model) (rate({_FAMILY}_count[{window}]))"
    )


# the condition the exercise asks for
REFERENCE_10 = f"({_bad_share('1h')}) > 14.4 * 0.005 and ({_bad_share('5m')}) > 14.4 * 0.005"


@dataclass(frozen=True)
class Scenario:
    """A history of ``minutes`` per instance: segments of (minutes, requests per minute, share over 10 ms)."""

    name: str
    story: str
    page: bool  # must the page fire at its end?
    instances: dict[str, tuple[tuple[int, int, float], ...]]

    @property
    def minutes(self) -> int:
        return sum(m for m, _, _ in next(iter(self.instances.values())))


HEALTHY = (1000, 0.001)  # 1000 requests a minute, 0.1% over 10 ms: burn rate 0.2
SCENARIOS_10 = (
    Scenario("healthy", "3 hours with 0.1% of requests over 10 ms", False, {"a": ((180, *HEALTHY),)}),
    Scenario(
        "burn 10%",
        "1 healthy hour, then 90 minutes with 10% over 10 ms",
        True,
        {"a": ((60, *HEALTHY), (90, 1000, 0.1))},
    ),
    Scenario(
        "burn 20%",
        "1 healthy hour, then 90 minutes with 20% over 10 ms",
        True,
        {"a": ((60, *HEALTHY), (90, 1000, 0.2))},
    ),
    Scenario(
        "blip",
        "3 healthy hours, then 3 minutes with every request over 10 ms (the last hour: 5.1%)",
        False,
        {"a": ((180, *HEALTHY), (3, 1000, 1.0))},
    ),
    Scenario(
        "burn over",
        "1 healthy hour, an hour with 10% over 10 ms, then 10 healthy minutes (the last hour: 8.4%)",
        False,
        {"a": ((60, *HEALTHY), (60, 1000, 0.1), (10, *HEALTHY))},
    ),
    Scenario(
        "one small instance",
        "2 hours, one instance at 100 requests a minute with 50% over 10 ms, another at 1000 a minute with 0.1% "
        "(the model: 51 / 1100 = 4.6%)",
        False,
        {"a": ((120, 100, 0.5),), "b": ((120, *HEALTHY),)},
    ),
)


def histogram_series(scenario: Scenario) -> list[dict]:
    """The scenario's cumulative ``demo_request_duration_seconds`` series, one sample a minute.

    Requests under 10 ms are split 9:1 between the buckets le=0.005 and le=0.01; those over
    10 ms all take 15 ms (le=0.025), so an answer that reads the 25 ms bucket sees none of them.
    """
    series = []
    for instance, segments in scenario.instances.items():
        totals = {"0.005": 0, "0.01": 0, "0.025": 0, "+Inf": 0, "count": 0, "sum": 0.0}
        history: dict[str, list] = {key: [0] for key in totals}
        for minutes, per_minute, share in segments:
            slow = round(per_minute * share)
            fast = per_minute - slow
            under_5ms = round(fast * 0.9)
            step = {"0.005": under_5ms, "0.01": fast, "0.025": per_minute, "+Inf": per_minute, "count": per_minute}
            step_sum = under_5ms * 0.002 + (fast - under_5ms) * 0.007 + slow * 0.015
            for _ in range(minutes):
                for key, add in step.items():
                    totals[key] += add
                    history[key].append(totals[key])
                totals["sum"] += step_sum
                history["sum"].append(round(totals["sum"], 6))
        labels = {**_LABELS, "instance": f"{instance}:8002"}
        for key, values in history.items():
            if key in ("count", "sum"):
                name, extra = f"{_FAMILY}_{key}", {}
            else:
                name, extra = f"{_FAMILY}_bucket", {"le": key}
            series.append({"name": name, "labels": {**labels, **extra}, "values": values})
    return series


def evaluate_scenarios(queries: list[str], scenarios, series_of, tag: str) -> list[list[tuple[str, list]]]:
    """Each query at the end of each scenario (whose input series ``series_of(scenario)`` gives), with Prometheus's
    own engine: per query, per scenario, ``(error, [(labels, value), ...])`` (an empty list: it returned nothing)."""
    sentinel = -123456.789  # what no query gives: every test "fails" and promtool prints what it got
    tests = []
    for scenario in scenarios:
        input_series = [
            {
                "series": s["name"] + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in s["labels"].items()) + "}",
                "values": " ".join(str(v) for v in s["values"]),
            }
            for s in series_of(scenario)
        ]
        checks = [
            {"expr": q, "eval_time": f"{scenario.minutes}m", "exp_samples": [{"labels": "{}", "value": sentinel}]}
            for q in queries
        ]
        tests.append({"interval": "1m", "input_series": input_series, "promql_expr_test": checks})
    unit = {"rule_files": [], "evaluation_interval": "1m", "tests": tests}
    from labcheck.checks import promtool_results  # not at the top: labcheck.checks imports this module

    results = promtool_results(unit, tag, len(queries) * len(scenarios))
    per_scenario = [results[i * len(queries) : (i + 1) * len(queries)] for i in range(len(scenarios))]
    return [[tuple(per_scenario[s][q]) for s in range(len(scenarios))] for q in range(len(queries))]


def evaluate_10(queries: list[str]) -> list[list[tuple[str, list[tuple[str, float]]]]]:
    """Exercise 10's queries on its scenarios (see :func:`evaluate_scenarios`)."""
    return evaluate_scenarios(queries, SCENARIOS_10, histogram_series, "check-10")


def check_10(queries: str | list[str]) -> Feedback | list[Feedback]:
    """Exercise 10: the PromQL condition of the fast-burn page for "99.5% of requests within 10 ms".

    It must return something (one or more series) at the end of each history where the page
    must fire, and nothing where it must not (:data:`SCENARIOS_10`). Several queries can be
    graded at once by passing a list.
    """
    batch = [queries] if isinstance(queries, str) else list(queries)
    if not any(q.strip() for q in batch):
        return _feedback("not attempted", "Write the PromQL condition in the string, then run this check.")
    attempted = [q for q in batch if q.strip()]
    answers = iter(evaluate_10([REFERENCE_10, *attempted]))
    reference = next(answers)
    if [bool(samples) for _, samples in reference] != [s.page for s in SCENARIOS_10]:
        raise RuntimeError(f"exercise 10's own reference does not grade as expected: {reference}")
    results = [_grade_10(next(answers)) if q.strip() else _grade_10(None) for q in batch]
    return results[0] if isinstance(queries, str) else results


def _feedback(status: str, message: str) -> Feedback:
    # imported here, not at the top: labcheck.checks imports this module at its end (checks.check_10)
    from labcheck import checks

    return checks.Feedback("10", status, message)


def _grade_10(answer) -> Feedback:
    if answer is None:
        return _feedback("not attempted", "Write the PromQL condition in the string.")
    errors = [error for error, _ in answer if error]
    if errors:
        return _feedback("wrong", f"Prometheus refused the query: {errors[0]}")
    fired = {s.name: bool(samples) for s, (_, samples) in zip(SCENARIOS_10, answer, strict=True)}
    wrong = [s for s in SCENARIOS_10 if fired[s.name] != s.page]
    if not wrong:
        return _feedback(
            "correct",
            "It pages on the fast burns (10% and 20% of requests over 10 ms for 90 minutes), and not on healthy "
            "traffic, a 3-minute blip, a burn that ended 10 minutes ago, or one small slow instance.",
        )
    said = "; ".join(f"{s.name}: {'fired' if fired[s.name] else 'silent'}" for s in SCENARIOS_10)
    return _feedback("wrong", f"{_hint(fired)} (At the end of each history: {said}.)")


def _hint(fired: dict[str, bool]) -> str:
    if fired["healthy"]:
        return (
            "It returns something on healthy traffic too (0.1% of requests over 10 ms): an alert condition "
            'returns nothing while all is well. Compare the share of SLOW requests, 1 - (le="0.01" bucket) / '
            "count, with the threshold, using > (not > bool)."
        )
    if not fired["burn 10%"] and fired["burn 20%"]:
        return (
            "It catches 20% of requests over 10 ms but not 10%: the threshold is too high. The budget of a 99.5% "
            "objective is 1 - 0.995 = 0.005 of the requests; 14.4 times it is 0.072."
        )
    if not fired["burn 10%"]:
        return (
            "It stays silent through a fast burn (10% and 20% of requests over 10 ms for 90 minutes). Slow means "
            'over the le="0.01" bucket (10 ms, not the 25 ms of the shipped SLO), and the threshold is '
            "14.4 x 0.005 = 0.072. If it returns nothing at all: both sides of / need the same labels (the bucket "
            "series carry le): sum by (model) (...) each side. The recording rules are not loaded here."
        )
    if fired["blip"]:
        return (
            "It pages on a 3-minute blip (the last hour held 5.1% of slow requests, under 7.2%): the long window "
            "must agree, ... [1h] ... > 0.072 and ... [5m] ... > 0.072."
        )
    if fired["burn over"]:
        return (
            "It still pages 10 minutes after the burn ended (the last 5 minutes are healthy): the short window "
            "must agree too, ... [1h] ... > 0.072 and ... [5m] ... > 0.072."
        )
    if fired["one small instance"]:
        return (
            "It pages for one small instance whose requests are 50% slow while the model as a whole is at 4.6%: "
            "add up the instances' rates (sum by (model) (rate(...))) before dividing, for the bucket and the count."
        )
    return "It does not fire where the fast-burn page must and stay quiet where it must not."
