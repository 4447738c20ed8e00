"""Notebook 10's SLOs: the shipped rules (docker/prometheus/rules/slo.yml) follow the SRE workbook's table and
read a bucket bound that metrics_demo really has; the dashboard reads only rules that exist; exercise 10's checker
grades its solution correct, known mistakes wrong with the right hint, and an empty answer "not attempted".

promtool runs the rules' own unit tests (docker/prometheus/tests/slo_*_test.yml) in test_prometheus_config.py,
with every other rule test; the live run against a real Triton is notebook 10 itself and test_prometheus_live.py.
"""

from __future__ import annotations

import ast
import re

import pytest

from labcheck import checks, slo
from labkit import paths
from labkit import prometheus as lp
from tests import monitoring_files as mf
from tests.conftest import require_tool

SLO_FILE = mf.RULES_DIR / "slo.yml"
PERIOD_H = 30 * 24
# the SRE workbook's multiwindow, multi-burn-rate table: long window -> (short window, budget spent, severity)
WORKBOOK = {"1h": ("5m", 0.02, "critical"), "6h": ("30m", 0.05, "critical"), "1d": ("2h", 0.10, "warning")}
WORKBOOK["3d"] = ("6h", 0.10, "warning")
HOURS = {"1h": 1, "6h": 6, "1d": 24, "3d": 72}
SLIS = {
    "availability": "model:demo_requests:error_ratio_rate",
    "latency": "model:demo_request_duration_seconds:slow_ratio_rate",
}


def slo_rules() -> list[dict]:
    return [r for r in mf.rules() if r["file"] == "slo.yml"]


def metrics_demo_buckets() -> list[float]:
    tree = ast.parse((paths.MODEL_REPOSITORY / "metrics_demo" / "1" / "model.py").read_text())
    return next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LATENCY_BUCKETS"
    )


# ------------------------------------------------------------------------------------------------ the rules


def test_objectives_sit_at_bucket_bounds_of_metrics_demo():
    """The latency SLO (25 ms) and the exercise's objective (10 ms) read one bucket each: both must be bounds."""
    bounds = metrics_demo_buckets()
    assert 0.025 in bounds and slo.OBJECTIVE_S in bounds, bounds
    for rule in slo_rules():
        for le in re.findall(r'le="([^"]+)"', rule["expr"]):
            assert float(le) == 0.025, rule


@pytest.mark.parametrize("sli", SLIS)
@pytest.mark.parametrize("long", WORKBOOK)
def test_alerts_follow_the_workbook_table(sli, long):
    short, spent, severity = WORKBOOK[long]
    burn = spent * PERIOD_H / HOURS[long]  # 14.4, 6, 3, 1
    name = f"Demo{sli.capitalize()}BurnRate{long}"
    alert = next(a for a in mf.alerts() if a["alert"] == name)
    assert alert["labels"] == {"severity": severity, "slo": sli}
    expr = " ".join(alert["expr"].split())
    for window in (long, short):
        assert f"{SLIS[sli]}{window} / 0.01 > {burn:g}" in expr, (name, window, burn, expr)
    floor = "increase(demo_requests_total" if sli == "availability" else "increase(demo_request_duration_seconds_count"
    assert (floor in expr) == (severity == "critical"), f"{name}: pages need the traffic floor, tickets do not"


def test_every_window_an_alert_reads_is_recorded_and_budgets_read_30d():
    records = {r["record"]: r for r in slo_rules() if "record" in r}
    for alert in (r for r in slo_rules() if "alert" in r):
        for name in re.findall(r"model:[a-z_]+:[a-z0-9_]+", alert["expr"]):
            assert name in records, f"{alert['alert']} reads {name}, which no rule records"
    for prefix in SLIS.values():
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
            assert f"[{window}]" in records[f"{prefix}{window}"]["expr"]
    for metric in ("demo_requests", "demo_request_duration_seconds"):
        budget = records[f"model:{metric}:error_budget_remaining30d"]["expr"]
        assert re.fullmatch(rf"1 - model:{metric}:[a-z_]+_rate30d / 0\.01", budget.strip()), budget


def test_alerts_share_a_group_with_the_ratios_they_read():
    """Rules of one group run in order, so an alert reads the ratios of the same evaluation (promtool, too)."""
    for group in mf.load_yaml(SLO_FILE)["groups"]:
        recorded = [r["record"] for r in group["rules"] if "record" in r]
        for rule in group["rules"]:
            if "alert" in rule:
                read = set(re.findall(r"model:[a-z_]+:[a-z0-9_]+", rule["expr"]))
                assert read <= set(recorded), (rule["alert"], read - set(recorded))


def test_every_slo_alert_has_a_rule_test():
    tested = set()
    for path in mf.RULE_TESTS:
        for test in mf.load_yaml(path)["tests"]:
            tested |= {case["alertname"] for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {r["alert"] for r in slo_rules() if "alert" in r} <= tested


def test_dashboard_slo_panels_read_rules_that_exist():
    records = {r["record"] for r in mf.recordings()}
    titles = []
    for _, panel, target in mf.panel_targets():
        for name in re.findall(r"model:[a-z_]+:[a-z0-9_]+", target["expr"]):
            assert name in records, f"{panel['title']}: {name} is not recorded"
            titles.append(panel["title"])
    assert any("burn rate" in t for t in titles) and any("budget" in t for t in titles), titles


# ----------------------------------------------------------------------------------------------- exercise 10


@pytest.fixture(scope="module")
def promtool():
    return require_tool("promtool", lp.INSTALL_HINT)


def _share(window, bucket='demo_request_duration_seconds_bucket{le="0.01"}', by="sum by (model)"):
    return f"(1 - {by} (rate({bucket}[{window}])) / {by} (rate(demo_request_duration_seconds_count[{window}])))"


B25 = 'demo_request_duration_seconds_bucket{le="0.025"}'
B10 = 'demo_request_duration_seconds_bucket{le="0.01"}'
C = "demo_request_duration_seconds_count"
# known-wrong answers and what the checker must say about each
WRONG_10 = {
    f"{_share('1h', B25)} > 0.072 and {_share('5m', B25)} > 0.072": "not the 25 ms of the shipped SLO",
    f"{_share('1h')} > 14.4 * 0.01 and {_share('5m')} > 14.4 * 0.01": "the threshold is too high",
    f"{_share('5m')} > 0.072": "3-minute blip",
    f"{_share('1h')} > 0.072": "after the burn ended",
    f"(1 - rate({B10}[1h]) / ignoring(le) rate({C}[1h])) > 0.072"
    f" and (1 - rate({B10}[5m]) / ignoring(le) rate({C}[5m])) > 0.072": "one small instance",
    f"(1 - rate({B10}[1h]) / rate({C}[1h])) > 0.072 and (1 - rate({B10}[5m]) / rate({C}[5m])) > 0.072": "same labels",
    f"sum(rate({B10}[1h])) / sum(rate({C}[1h])) > 0.072 and sum(rate({B10}[5m])) / sum(rate({C}[5m])) > 0.072": (
        "healthy traffic"
    ),
    f"{_share('1h')} > bool 0.072 and {_share('5m')} > bool 0.072": "not > bool",
    "model:demo_request_duration_seconds:slow_ratio_rate1h > 0.072": "recording rules are not loaded",
    f"sum(rate({B10}[1h]": "refused the query",
}


def test_10_solution_right_variants_and_known_mistakes(promtool):
    solution = {}
    exec((paths.NOTEBOOKS / "solutions" / "10_latency_fast_burn.py").read_text(), solution)  # what %load would run
    assert checks.check_10("").status == "not attempted"
    assert checks.check_10(["  ", ""]).status == "not attempted"
    right = [
        solution["latency_page_promql"],
        slo.REFERENCE_10,
        f"{_share('1h', by='sum')} / 0.005 > 14.4 and {_share('5m', by='sum')} / 0.005 > 14.4",
        # the +Inf bucket counts every request, as _count does
        f"{_share('1h')} >= 0.072 and {_share('5m', by='sum by (model)')} > 0.072",
        f"{_share('1h', by='sum')} > 0.072 and (1 - sum(rate({B10}[5m])) / sum(rate("
        'demo_request_duration_seconds_bucket{le="+Inf"}[5m]))) > 0.072',
    ]
    results = checks.check_10([*right, "", *WRONG_10])
    for feedback in results[: len(right)]:
        assert feedback.status == "correct", feedback
    assert results[len(right)].status == "not attempted"
    for feedback, (answer, says) in zip(results[len(right) + 1 :], WRONG_10.items(), strict=True):
        assert feedback.status == "wrong" and says in feedback.message, (answer, feedback)


def test_10_scenarios_tell_every_known_mistake_apart(promtool):
    """Each scenario decides the grade of at least one mistake, and the reference fires exactly where it must."""
    answers = slo.evaluate_10([slo.REFERENCE_10, *list(WRONG_10)[:-1]])
    assert [bool(samples) for _, samples in answers[0]] == [s.page for s in slo.SCENARIOS_10]
    deciding = set()
    for answer in answers[1:]:
        fired = [bool(samples) for _, samples in answer]
        deciding |= {s.name for s, f in zip(slo.SCENARIOS_10, fired, strict=True) if f != s.page}
    assert deciding == {s.name for s in slo.SCENARIOS_10}


def test_10_histories_are_cumulative_histograms():
    for scenario in slo.SCENARIOS_10:
        series = slo.histogram_series(scenario)
        assert {len(s["values"]) for s in series} == {scenario.minutes + 1}
        for s in series:
            assert all(b >= a for a, b in zip(s["values"], s["values"][1:], strict=False)), (scenario.name, s["labels"])
        for instance in scenario.instances:
            buckets = sorted(
                (float(s["labels"]["le"]), s["values"])
                for s in series
                if s["labels"]["instance"] == f"{instance}:8002" and "le" in s["labels"]
            )
            for (_, lower), (_, upper) in zip(buckets, buckets[1:], strict=False):
                assert all(a <= b for a, b in zip(lower, upper, strict=True)), scenario.name
