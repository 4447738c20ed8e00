"""The shipped Prometheus config, rules and Grafana dashboards: promtool and lint (no server)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from labkit import prometheus as lp
from tests import monitoring_files as mf
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", lp.INSTALL_HINT)


def run_promtool(promtool, *args):
    result = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


# ------------------------------------------------------------------------ promtool


def test_files_exist():
    assert mf.PROMETHEUS_CONFIG.exists()
    assert len(mf.RULE_FILES) >= 2 and mf.RULE_TESTS and mf.DASHBOARDS and mf.DATASOURCES


def test_promtool_check_config(promtool):
    code, out = run_promtool(promtool, "check", "config", mf.PROMETHEUS_CONFIG)
    assert code == 0, out
    assert f"SUCCESS: {len(mf.RULE_FILES)} rule files found" in out, "the config must load every file of rules/"


def test_promtool_check_rules(promtool):
    code, out = run_promtool(promtool, "check", "rules", *mf.RULE_FILES)
    assert code == 0, out


def test_promtool_test_rules(promtool):
    code, out = run_promtool(promtool, "test", "rules", *mf.RULE_TESTS)
    assert code == 0 and "SUCCESS" in out, out


def test_every_alert_is_tested_firing_and_quiet():
    cases: dict[str, set[str]] = {}
    for path in mf.RULE_TESTS:
        spec = mf.load_yaml(path)
        for rule_file in spec["rule_files"]:
            assert (path.parent / rule_file).resolve() in [p.resolve() for p in mf.RULE_FILES], rule_file
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add("fires" if case.get("exp_alerts") else "quiet")
    for alert in mf.alerts():
        assert cases.get(alert["alert"]) == {"fires", "quiet"}, f"{alert['alert']}: needs a firing and a quiet case"


@pytest.mark.parametrize("alert", [a["alert"] for a in mf.alerts()])
def test_rule_tests_catch_a_broken_alert(promtool, tmp_path, alert):
    """With the alert's condition made impossible, its unit tests must fail."""
    shutil.copytree(mf.RULES_DIR.parent, tmp_path / "prometheus")
    broken = tmp_path / "prometheus" / "rules" / next(a["file"] for a in mf.alerts() if a["alert"] == alert)
    text = broken.read_text()
    start = text.index(f"- alert: {alert}")
    expr_at = text.index("expr:", start)
    end_of_expr = text.index("for:", expr_at)
    broken.write_text(text[:expr_at] + "expr: vector(1) == 0\n        " + text[end_of_expr:])
    tests = [p for p in sorted((tmp_path / "prometheus" / "tests").glob("*.yml")) if alert in p.read_text()]
    code, out = run_promtool(promtool, "test", "rules", *tests)
    assert code != 0 and alert in out, out


def test_rule_conventions():
    for rule in mf.recordings():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), f"level:metric:operations: {rule}"
    for rule in mf.alerts():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert rule.get("for"), f"{rule['alert']}: a `for:` keeps a blip from paging"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    slo_windows = {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}  # slo.yml: the SRE workbook's window pairs
    for rule in mf.rules():
        allowed = slo_windows if rule["file"] == "slo.yml" else {"5m"}
        for window in re.findall(r"\[([^\]]+)\]", rule["expr"]):
            assert window in allowed, f"{rule.get('record') or rule.get('alert')}: windows are 5m (>= 4 scrapes of 15s)"


# ------------------------------------------------------------------------ Grafana

KNOWN_UNITS = {"reqps", "percentunit", "s", "ms", "short", "none", "bytes", "percent", "watt"}


def test_datasource_is_provisioned_with_a_fixed_uid():
    sources = [s for path in mf.DATASOURCES for s in mf.load_yaml(path)["datasources"]]
    assert len(sources) == 1
    source = sources[0]
    assert source["uid"] and source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    scrape_interval = mf.load_yaml(mf.PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape_interval, "$__rate_interval is computed from this"


DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}  # the dashboard's datasource variable, never a fixed uid


@pytest.mark.parametrize("name", [p.name for p in mf.DASHBOARDS])
def test_dashboard_lint(name):
    board = mf.dashboards()[name]
    assert board["uid"] and board["title"] and board.get("description")
    assert isinstance(board.get("schemaVersion"), int)
    panels = mf.panels(board)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"{name}: panel {panel.get('title')!r}"
        assert panel.get("title"), f"{name}: a panel has no title"
        assert len(panel.get("description", "")) >= 30, f"{where}: say what question the panel answers"
        assert panel["datasource"] == DATASOURCE, f"{where}: datasource"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in KNOWN_UNITS, f"{where}: unit {unit!r}"
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"]["unit"] in KNOWN_UNITS, f"{where}: the heatmap's y axis needs a unit"
            assert all(t.get("format") == "heatmap" for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{where}: wider than the 24-column grid"
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"{where}: overlaps another panel"
        cells |= mine
        targets = panel["targets"]
        assert targets, f"{where}: no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["datasource"] == DATASOURCE, f"{where}: datasource"
            expr = target["expr"]
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{where}: range [{window}]: use [$__rate_interval]"
            if re.search(r"\b(rate|increase)\(", expr):
                assert "[$__rate_interval]" in expr
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert variable["datasource"] == DATASOURCE, f"{name}: variable {variable['name']}"


@pytest.mark.parametrize("name", [p.name for p in mf.DASHBOARDS])
def test_dashboard_datasource_variable_defaults_to_the_provisioned_datasource(name):
    """Any Grafana can pick its Prometheus; Compose's (and kube-prometheus-stack's, same uid) is the default."""
    variables = mf.variables(mf.dashboards()[name])
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == mf.datasource_uid() == "prometheus"
    (source,) = [s for path in mf.DATASOURCES for s in mf.load_yaml(path)["datasources"]]
    assert source["isDefault"] is True and datasource["current"]["text"] == source["name"]
    assert list(variables)[0] == "datasource", "the other variables query it: it comes first"


# a series of Triton or of the model, not preceded by ':' (recording rules such as model:demo_requests:... are not)
RAW_SELECTOR = re.compile(r"(?<![\w:])((?:demo|nv|digits)_[a-z_]+|up)(?![\w:])(\{[^}]*\})?")


@pytest.mark.parametrize("name", [p.name for p in mf.DASHBOARDS])
def test_dashboard_queries_select_the_job_variable(name):
    """Every query of a Triton series selects job="$job": Compose's job is triton, the Prometheus Operator's is
    <namespace>/<PodMonitor>, so a fixed job shows nothing on a cluster."""
    board = mf.dashboards()[name]
    variables = mf.variables(board)
    job = variables["job"]
    assert job["current"]["value"] == mf.COMPOSE_JOB and not job.get("multi") and not job.get("includeAll")
    assert mf.label_values_query(job)[0] == "job"
    jobs = [j["job_name"] for j in mf.load_yaml(mf.PROMETHEUS_CONFIG)["scrape_configs"]]
    assert mf.COMPOSE_JOB in jobs
    queries = [mf.label_values_query(variables["model"])[1]]
    queries += [t["expr"] for board_name, _, t in mf.panel_targets() if board_name == name]
    assert not [q for q in queries if re.search(r"job\s*=~?\s*\"(?!\$job\")", q)], "a fixed job: use $job"
    selectors = [m for query in queries for m in RAW_SELECTOR.finditer(query)]
    assert selectors
    for match in selectors:
        assert match.group(2) and 'job="$job"' in match.group(2), f'{match.group(0)}: no job="$job"'


def test_the_job_check_catches_a_fixed_job():
    for expr in ('sum(rate(demo_requests_total{job="triton"}[5m]))', "sum(nv_gpu_utilization)"):
        match = next(RAW_SELECTOR.finditer(expr))
        assert not (match.group(2) and 'job="$job"' in match.group(2))
    assert not list(RAW_SELECTOR.finditer("model:demo_requests:error_ratio_rate1h"))


def test_dashboards_cover_the_course_metrics():
    exprs = [t["expr"] for _, _, t in mf.panel_targets()]
    text = "\n".join(exprs)
    for needed in (
        "rate(demo_requests_total",
        'outcome="error"',
        "demo_inflight_requests",
        "histogram_quantile(0.95, sum by (le) (rate(demo_request_duration_seconds_bucket",
        "rate(demo_request_duration_seconds_sum",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_gpu_utilization",
        "rate(digits_prediction_confidence_sum",
        "digits_training_class_share",
        'rate(digits_input_drift_score_bucket{job="$job", model=~"$model", le="1"}',
        "sum by (phase, le) (rate(digits_phase_duration_seconds_bucket",
        "sum by (reason) (rate(digits_input_errors_total",
    ):
        assert needed in text, f"no panel queries {needed}"
    kinds = {p["type"] for board in mf.dashboards().values() for p in mf.panels(board)}
    assert "heatmap" in kinds


@pytest.mark.parametrize(
    ("name", "panel", "alert"), [pytest.param(*case, id=f"{case[0]}:{case[2]['alert']}") for case in mf.alert_panels()]
)
def test_a_panel_threshold_is_its_alert_threshold(name, panel, alert):
    """The red line of a panel is where its alert fires (the first line of the alert: ``signal < or > number``),
    red on the alerting side: changing a threshold in the rules and not on the dashboard fails here."""
    direction, value = mf.alert_threshold(alert)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, value], f"{name}: {panel['title']}"
    alerting = steps[0] if direction == "<" else steps[1]
    assert alerting["color"] == "red" and {s["color"] for s in steps} == {"red", "green"}, f"{name}: {panel['title']}"


def test_every_quality_alert_has_a_panel():
    found = mf.alert_panels()
    assert {a["alert"] for a in mf.alerts() if a["file"] == "quality.yml"} <= {alert["alert"] for _, _, alert in found}
    assert len(found) >= 5


def test_concrete_replaces_grafana_variables():
    expr = 'rate(x{model=~"$model"}[$__rate_interval]) + rate(y{model=~"${model}"}[${__rate_interval}])'
    assert mf.concrete(expr, "7s", "m") == 'rate(x{model=~"m"}[7s]) + rate(y{model=~"m"}[7s])'
    expr = 'up{job="$job"} + up{job="${job}"}'
    assert mf.concrete(expr) == 'up{job="triton"} + up{job="triton"}'
    assert mf.concrete(expr, job="triton/triton") == 'up{job="triton/triton"} + up{job="triton/triton"}'
