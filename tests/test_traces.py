"""Notebook 12 (traces beside metrics) and exercise 12.

- unit: ``labcheck.traces.per_request`` on the JSON layout of Triton's trace docs; the checker's verdicts and hints
  on a made-up traces table; notebook 12 shows the checker's ``per_request`` in full (the same code);
  ``trace_demo`` logs exactly the observations above one of its histogram's bucket bounds;
- integration (a real Triton 2.51.0): the solution is graded correct on a real trace, the unsolved exercise
  "not attempted", known-wrong answers wrong with the hint each deserves; the trace facts notebook 12 states and
  does not run itself: ``triton,log-frequency`` (dash) writes indexed files while the server runs,
  ``triton,log_frequency`` (underscore) is ignored, and a client connection left open costs the whole trace file.
"""

from __future__ import annotations

import ast
import importlib.util
import json

import nbformat
import numpy as np
import pandas as pd
import pytest
import requests

from labcheck import checks, traces
from labkit import paths, triton

SOLUTIONS = paths.NOTEBOOKS / "solutions"
NOTEBOOK = paths.NOTEBOOKS / "12_traces_beside_metrics.ipynb"


def solution():
    spec = importlib.util.spec_from_file_location("solution_12", SOLUTIONS / "12_behind_p99.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.behind_p99


# ------------------------------------------------------------------ known-wrong answers to exercise 12


def by_compute(t):
    """Picks the slow requests by compute time: misses those that were slow waiting."""
    slow = t[t["compute_s"] > t["compute_s"].quantile(0.99)]
    return pd.Series(np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute"), index=slow["request_id"])


def all_compute(t):
    """The right requests, every one blamed on compute."""
    slow = t[t["total_s"] > t["total_s"].quantile(0.99)]
    return pd.Series("compute", index=slow["request_id"])


def causes_swapped(t):
    slow = t[t["total_s"] > t["total_s"].quantile(0.99)]
    return pd.Series(np.where(slow["queue_s"] < slow["compute_s"], "queue", "compute"), index=slow["request_id"])


def slowest_only(t):
    slow = t.nlargest(1, "total_s")
    return pd.Series(np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute"), index=slow["request_id"])


def above_mean(t):
    slow = t[t["total_s"] > t["total_s"].mean()]
    return pd.Series(np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute"), index=slow["request_id"])


def by_trace_id(t):
    slow = t[t["total_s"] > t["total_s"].quantile(0.99)]
    return pd.Series(np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute"), index=slow.index)


def ids_only(t):
    return list(t.loc[t["total_s"] > t["total_s"].quantile(0.99), "request_id"])


WRONG = {
    "by_compute": (by_compute, "picked them by compute_s"),
    "all_compute": (all_compute, "some waited in the queue"),
    "causes_swapped": (causes_swapped, 'is "queue" when its queue_s is larger'),
    "slowest_only": (slowest_only, "Some are missing"),
    "above_mean": (above_mean, "Too many"),
    "by_trace_id": (by_trace_id, "Index the Series by request_id"),
    "ids_only": (ids_only, "It returned list"),
}


# ------------------------------------------------------------------ unit: parsing and the checker's logic

# The example of Triton's trace docs (docs/user_guide/trace.md, "JSON Trace Output", v2.51.0), with the
# object that carries the model and the request id.
DOC_EVENTS = [
    {"id": 1, "model_name": "simple", "model_version": 1, "request_id": "r-1"},
    *(
        {"id": 1, "timestamps": [{"name": name, "ns": ns}]}
        for name, ns in [
            ("HTTP_RECV_START", 2356425054587444),
            ("HTTP_RECV_END", 2356425054632308),
            ("REQUEST_START", 2356425054785863),
            ("QUEUE_START", 2356425054791517),
            ("INFER_RESPONSE_COMPLETE", 2356425057587919),
            ("COMPUTE_START", 2356425054887198),
            ("COMPUTE_INPUT_END", 2356425057152908),
            ("COMPUTE_OUTPUT_START", 2356425057497763),
            ("COMPUTE_END", 2356425057540989),
            ("REQUEST_END", 2356425057643164),
            ("HTTP_SEND_START", 2356425057681578),
            ("HTTP_SEND_END", 2356425057712991),
        ]
    ),
]


def test_per_request_on_the_documented_layout():
    table = traces.per_request(DOC_EVENTS)
    assert list(table.index) == [1] and table.loc[1, "request_id"] == "r-1"
    row = table.loc[1]
    assert row["queue_s"] == pytest.approx((2356425054887198 - 2356425054791517) / 1e9)
    assert row["compute_s"] == pytest.approx((2356425057540989 - 2356425054887198) / 1e9)
    assert row["input_s"] + row["infer_s"] + row["output_s"] == pytest.approx(row["compute_s"])
    assert row["total_s"] == pytest.approx((2356425057643164 - 2356425054785863) / 1e9)


def made_up_traces() -> pd.DataFrame:
    """200 requests of about 1 ms; the two above the p99 are one slow computing, one slow waiting; below them one
    more of each kind, so that picking by compute_s gives another pair."""
    rng = np.random.default_rng(0)
    queue = rng.uniform(0.0001, 0.0003, 200)
    compute = rng.uniform(0.0005, 0.0008, 200)
    for i, (q, c) in {10: (0.0001, 0.120), 20: (0.110, 0.0005), 30: (0.0002, 0.100), 40: (0.095, 0.0006)}.items():
        queue[i], compute[i] = q, c
    frame = pd.DataFrame({"request_id": [f"r{i}" for i in range(200)], "queue_s": queue, "compute_s": compute})
    frame["total_s"] = frame["queue_s"] + frame["compute_s"] + 0.00002
    return frame.set_index(pd.RangeIndex(1, 201, name="id"))


@pytest.fixture
def made_up(monkeypatch):
    frame = made_up_traces()
    monkeypatch.setattr(traces, "exercise_traces", lambda: frame)
    return frame


def test_made_up_traces_have_both_causes_above_the_p99(made_up):
    assert traces.behind_p99_reference(made_up).to_dict() == {"r10": "compute", "r20": "queue"}


def test_check_12_verdicts_on_a_made_up_table(made_up):
    assert checks.check_12(solution()).status == "correct"
    assert checks.check_12(traces.behind_p99_reference).status == "correct"
    assert checks.check_12(lambda t: dict(traces.behind_p99_reference(t))).status == "correct"
    assert checks.check_12(lambda t: None).status == "not attempted"
    assert checks.check_12(lambda t: traces.behind_p99_reference(t).map(str.upper)).status == "correct"
    wrong = checks.check_12(lambda t: traces.behind_p99_reference(t).replace("queue", "waiting"))
    assert wrong.status == "wrong" and "not ['waiting']" in wrong.message


@pytest.mark.parametrize("mistake", WRONG)
def test_check_12_known_wrong_answers_on_a_made_up_table(made_up, mistake):
    answer, hint = WRONG[mistake]
    feedback = checks.check_12(answer)
    assert feedback.status == "wrong" and hint in feedback.message, feedback.message


def test_check_12_is_labcheck_checks_check_12():
    assert checks.check_12 is traces.check_12


def _function(source: str, name: str) -> ast.FunctionDef:
    tree = ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()))
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _body(fn: ast.FunctionDef) -> str:
    """The function's signature and code, without its docstring."""
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    return ast.dump(fn.args) + "\n".join(ast.dump(statement) for statement in body)


def test_notebook_12_shows_the_checkers_per_request_in_full():
    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    shown = [c for c in cells if "def per_request(" in c]
    assert len(shown) == 1, "notebook 12 defines per_request in one cell"
    checker = (paths.ROOT / "labcheck" / "traces.py").read_text()
    assert _body(_function(shown[0], "per_request")) == _body(
        _function(checker, "per_request")
    ), "notebook 12's per_request differs from labcheck/traces.py's: keep the two the same"


def test_trace_demo_logs_exactly_what_lies_above_a_bucket_bound():
    """Notebook 12 §7 compares bucket counts with log lines exactly: the log threshold must be a bucket bound,
    and the logged time must be the observed value, in full precision."""
    source = (paths.MODEL_REPOSITORY / "trace_demo" / "1" / "model.py").read_text()
    values = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in ("SLOW_SECONDS", "LATENCY_BUCKETS")
    }
    assert values["SLOW_SECONDS"] in values["LATENCY_BUCKETS"]
    assert "if elapsed > SLOW_SECONDS" in source and "self.latency.observe(elapsed)" in source
    assert "compute_s={elapsed!r}" in source


# ------------------------------------------------------------------ integration: a real trace


@pytest.mark.integration
def test_12_solution_on_a_real_trace_and_not_attempted():
    feedback = checks.check_12(solution())
    assert feedback.status == "correct", feedback.message
    assert checks.check_12(lambda t: None).status == "not attempted"
    real = traces.exercise_traces()
    assert set(traces.behind_p99_reference(real)) == {"queue", "compute"}
    assert not real["request_id"].str.startswith("warmup").any()


@pytest.mark.integration
@pytest.mark.parametrize("mistake", WRONG)
def test_12_known_wrong_answers_on_a_real_trace(mistake):
    answer, hint = WRONG[mistake]
    feedback = checks.check_12(answer)
    assert feedback.status == "wrong" and hint in feedback.message, feedback.message


def _send(server, count: int) -> None:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for i in range(count):
            tensor = grpcclient.InferInput("INPUT0", [8], "FP32")
            tensor.set_data_from_numpy(np.ones(8, dtype=np.float32))
            client.infer("trace_demo", [tensor], request_id=f"t-{i}")


def _start(tmp_path, spelling: str, *more: str) -> triton.TritonServer:
    flags = [*traces.trace_flags(tmp_path / "trace.json"), f"--trace-config=triton,{spelling}=10", *more]
    return triton.start(paths.MODEL_REPOSITORY, mode="local", models=["trace_demo"], extra_args=flags)


@pytest.mark.integration
def test_log_frequency_with_a_dash_writes_files_while_triton_runs(tmp_path):
    with _start(tmp_path, "log-frequency") as server:
        _send(server, 25)
        written = sorted(p.name for p in tmp_path.iterdir())
        server.stop(timeout=40, graceful=True)
    assert written == ["trace.json.0", "trace.json.1"]  # every 10 traces, while the server runs
    assert server.returncode == 0
    files = {p.name: json.loads(p.read_text()) for p in tmp_path.iterdir()}
    assert sorted(files) == ["trace.json.0", "trace.json.1", "trace.json.2"]  # the last 5 at shutdown
    requests_in = {name: {e["request_id"] for e in events if "request_id" in e} for name, events in files.items()}
    assert [len(requests_in[name]) for name in sorted(files)] == [10, 10, 5]


@pytest.mark.integration
def test_log_frequency_with_an_underscore_is_ignored_and_an_open_connection_loses_the_file(tmp_path):
    with _start(tmp_path, "log_frequency", "--exit-timeout-secs=3") as server:  # the last one counts
        kept = requests.get(f"{server.http_url}/v2/trace/setting", timeout=5)  # its connection stays open
        _send(server, 25)
        written = sorted(p.name for p in tmp_path.iterdir())
        server.stop(timeout=40, graceful=True)
    assert kept.text.count('"log_frequency"') == 2 and kept.json()["log_frequency"] == "10"  # shown, not used
    assert '"log_frequency":"0"' in kept.text
    assert written == []  # nothing while running: log-frequency is still 0
    # Triton waited the whole exit timeout for the open connection, gave up (exit 1) and never wrote the file
    assert server.returncode == 1 and "Exit timeout expired" in server.log()
    assert not (tmp_path / "trace.json").exists()
