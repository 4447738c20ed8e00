"""labkit.triton and the reference model on a real tritonserver 2.51.0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from tritonclient.utils import InferenceServerException

from labkit import paths, process, repository, scrape, traffic, triton

from .conftest import require_tool

pytestmark = pytest.mark.integration

BROKEN = {
    "name_error": ("    def initialize(self, args):\n        self.x = undefined_name + 1\n", "NameError"),
    "syntax_error": ("    def initialize(self, args)\n        pass\n", "SyntaxError"),
    "import_error": ("    def initialize(self, args):\n        import no_such_module  # noqa\n", "No module named"),
}


def counts(server) -> dict[str, float]:
    frame = scrape.scrape(server.metrics_url)
    return {
        "success": scrape.value(frame, "demo_requests_total", outcome="success"),
        "error": scrape.value(frame, "demo_requests_total", outcome="error"),
        "hist_count": scrape.value(frame, "demo_request_duration_seconds_count"),
        "nv_success": scrape.value(frame, "nv_inference_request_success", model="metrics_demo"),
        "nv_failure": scrape.value(frame, "nv_inference_request_failure", model="metrics_demo"),
    }


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def settled_counts(server) -> dict[str, float]:
    """counts() once Triton's own count has caught up with the model's.

    Triton moves ``nv_inference_request_success`` just after the response leaves, so a scrape right
    after an earlier test's last answer can be a request short. At rest every request that reached the
    model is one Triton success (its error responses included): read again (bounded) until it is.
    """
    now = counts(server)
    at_rest = {**now, "nv_success": now["success"] + now["error"]}
    return scrape.settle(lambda: counts(server), at_rest, what="Triton's count catching up with the model's")


def listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    addrs = set()
    for proc in procs:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addrs.add(conn.laddr.ip.removeprefix("::ffff:"))  # IPv4-mapped on an IPv6 socket
    return addrs


def shm_regions(server) -> list[str]:
    """The /dev/shm files of this server's model stubs (labkit gives each server its own prefix)."""
    flag = next(arg for arg in server.command if triton.SHM_FLAG in arg)
    prefix = flag.split(triton.SHM_FLAG, 1)[1]
    return sorted(p.name for p in Path("/dev/shm").glob(f"{prefix}*"))


def test_start_serves_and_stop_leaves_nothing(monkeypatch):
    monkeypatch.setenv(triton.STOP_ENV, "graceful")  # SIGTERM and a clean unload, as a deployment stops
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
    try:
        assert server.is_ready()
        family_pids = {p.pid for p in psutil.Process(server.pid).children(recursive=True)} | {server.pid}
        assert len(family_pids) >= 3  # the server and one stub per model instance
        assert listening_addresses(server.pid) == {"127.0.0.1"}
        meta = requests.get(f"{server.http_url}/v2", timeout=5).json()
        assert meta["version"] == "2.51.0"
        assert "Started Metrics Service at 127.0.0.1" in server.log()
        assert len(shm_regions(server)) == 2  # one region per stub, named with this server's prefix
    finally:
        server.stop()
    assert not server.is_running()
    assert not [pid for pid in family_pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert "successfully unloaded 'metrics_demo'" in server.log()  # the log survives stop()
    assert shm_regions(server) == []
    server.stop()  # twice is fine


def test_killed_or_crashed_server_leaves_no_shared_memory(monkeypatch):
    """SIGKILL (labkit's default stop, or a crash such as notebook 07's aborts) leaves the stubs' /dev/shm
    regions behind, which Triton removes only on a clean exit; stop() removes them."""
    monkeypatch.delenv(triton.STOP_ENV, raising=False)
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
    try:
        regions = shm_regions(server)
        assert len(regions) == 2
        os.kill(server.pid, signal.SIGKILL)  # the server dies the way an abort kills it
        server.popen.wait(timeout=10)
        assert shm_regions(server) == regions  # nobody cleaned up yet: this is the leak
    finally:
        server.stop()
    assert shm_regions(server) == []
    assert "successfully unloaded" not in server.log()


def test_context_manager_stops_the_server():
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
        pid = server.pid
        assert server.is_ready()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_exact_counts_over_both_protocols(server):
    before = settled_counts(server)
    grpc = traffic.closed_loop(server, concurrency=4, requests=300, error_rate=0.2, seed=1, progress=False)
    http = traffic.closed_loop(
        server, concurrency=3, requests=200, error_rate=0.1, seed=2, protocol="http", progress=False
    )
    sent = len(grpc) + len(http)
    ok = int(grpc["ok"].sum() + http["ok"].sum())
    bad = int(grpc["bad"].sum() + http["bad"].sum())
    assert sent == 500
    assert bad > 0 and ok == sent - bad  # exactly the requests made bad failed
    # Triton counts a request whose Python model returned an error *response* as a success
    expected = {"success": ok, "error": bad, "hist_count": ok, "nv_success": sent, "nv_failure": 0}
    # Triton bumps its own counters just after the response leaves: read again (bounded) until exact
    scrape.settle(lambda: delta(before, counts(server)), expected, what="counters moved by")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([1.0, np.nan, 2.0], dtype=np.float32), "NaN or infinity (first at index 1)"),
        (np.array([np.inf], dtype=np.float32), "NaN or infinity"),
        (np.zeros(0, dtype=np.float32), "INPUT0 is empty"),
        (np.ones(4097, dtype=np.float32), "4097 values; the limit is 4096"),
    ],
    ids=["nan", "inf", "empty", "too_large"],
)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_input_gets_error_and_moves_error_counter(server, protocol, values, message):
    client = traffic.make_client(server, protocol)
    before = counts(server)
    with pytest.raises(InferenceServerException, match=message.replace("(", r"\(").replace(")", r"\)")):
        traffic.infer(client, values)
    moved = delta(before, counts(server))
    assert moved["error"] == 1 and moved["success"] == 0 and moved["hist_count"] == 0
    assert server.is_ready()
    assert traffic.infer(client, np.array([1.0, 3.0], dtype=np.float32)).tolist() == [1.0, 1.0]
    client.close()


def test_requests_triton_rejects_never_reach_the_model(server):
    before = settled_counts(server)  # the previous test's last answer may not be in Triton's count yet
    url = f"{server.http_url}/v2/models/metrics_demo/infer"
    wrong_rank = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    response = requests.post(url, json=wrong_rank, timeout=10)
    assert response.status_code == 400 and "unexpected shape" in response.json()["error"]
    response = requests.post(url, data=b"{not json", timeout=10)
    assert response.status_code >= 400 and "failed to parse the request JSON" in response.json()["error"]
    wrong_type = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [2], "data": [1, 2]}]}
    response = requests.post(url, json=wrong_type, timeout=10)
    assert response.status_code == 400 and "data-type" in response.json()["error"]
    response = requests.post(f"{server.http_url}/v2/models/nope/infer", json=wrong_rank, timeout=10)
    assert response.status_code in (400, 404) and "nope" in response.json()["error"]
    moved = delta(before, counts(server))
    assert moved == {"success": 0, "error": 0, "hist_count": 0, "nv_success": 0, "nv_failure": 0}
    assert server.is_ready()


def test_gauge_returns_to_zero_and_histogram_is_consistent(server):
    before = scrape.scrape(server.metrics_url)
    run = traffic.closed_loop(server, concurrency=4, requests=100, sizes=(512, 2048), progress=False)
    frame = scrape.scrape(server.metrics_url)
    assert scrape.value(frame, "demo_inflight_requests") == 0
    buckets = scrape.select(frame, "demo_request_duration_seconds_bucket")
    cumulative = buckets.assign(le=buckets["le"].map(float)).sort_values("le")["value"].to_numpy()
    assert (np.diff(cumulative) >= 0).all()
    assert cumulative[-1] == scrape.value(frame, "demo_request_duration_seconds_count")
    # the model times its own compute, inside each request's round trip: more than nothing, and never
    # more than the clients waited in all (whatever the speed of the machine)
    computed = scrape.value(frame, "demo_request_duration_seconds_sum") - scrape.value(
        before, "demo_request_duration_seconds_sum"
    )
    assert run["ok"].all() and 0 < computed <= run["latency_s"].sum()


def test_reference_metrics_pass_promtool(server):
    promtool = require_tool("promtool", "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus")
    traffic.closed_loop(server, concurrency=2, requests=20, error_rate=0.3, progress=False)
    text = requests.get(server.metrics_url, timeout=5).text
    ours = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith(("demo_", "# HELP demo_", "# TYPE demo_")))
    assert "# TYPE demo_request_duration_seconds histogram" in ours
    result = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # and Triton's own names do not pass: the course explains why (_us units, counters without _total)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode != 0 and "nv_inference_request_duration_us" in result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_py_gives_readable_error(tmp_path, case):
    body, expected = BROKEN[case]
    model_py = tmp_path / "model.py"
    model_py.write_text("import triton_python_backend_utils as pb_utils\n\n\nclass TritonPythonModel:\n" + body)
    repo = tmp_path / "repo"
    repository.add_model(repo, "broken", model_py)
    with pytest.raises(triton.TritonStartError) as err:
        triton.start(repo)
    message = str(err.value)
    # raised on Triton's exit, not after waiting out the readiness timeout ("Triton was not ready after ...")
    assert message.startswith("Triton exited with code 1.")
    assert "Model 'broken' (version 1) failed to load:" in message
    assert expected in message
    assert "model.py" in message


def test_occupied_default_ports_do_not_matter():
    holders = []
    for port in (8000, 8001, 8002):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            holders.append(sock)
        except OSError:
            sock.close()  # already taken by something else: just as good for this test
    try:
        with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
            assert {server.ports.http, server.ports.grpc, server.ports.metrics}.isdisjoint({8000, 8001, 8002})
            assert server.is_ready()
    finally:
        for sock in holders:
            sock.close()


def test_fixed_port_in_use_is_explained():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    grpc, metrics = process.free_ports(2)
    try:
        ports = triton.Ports(holder.getsockname()[1], grpc, metrics)
        with pytest.raises(triton.TritonStartError, match="already in use"):
            triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], ports=ports)
    finally:
        holder.close()


def test_a_port_taken_between_pick_and_start_is_picked_again(monkeypatch):
    """Another process may bind a picked port before Triton does (seen in CI with three servers started at
    once): Triton's HTTP and metrics services then say "Socket '127.0.0.1:N' already in use"; labkit starts
    again on new ports instead of failing."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    real_pick = triton.Ports.pick
    picks: list[triton.Ports] = []

    def pick(cls) -> triton.Ports:
        fresh = real_pick()
        # first start: HTTP port taken; second: metrics port taken; third: all free
        chosen = [fresh.__class__(taken, fresh.grpc, fresh.metrics), fresh.__class__(fresh.http, fresh.grpc, taken)]
        picks.append(chosen[len(picks)] if len(picks) < 2 else fresh)
        return picks[-1]

    monkeypatch.setattr(triton.Ports, "pick", classmethod(pick))
    try:
        with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
            assert server.is_ready()
            assert taken not in (server.ports.http, server.ports.grpc, server.ports.metrics)
    finally:
        holder.close()
    assert len(picks) == 3


CHILD = """
import json, sys, time
from labkit import paths, triton
server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
import psutil
kids = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
shm = next(a for a in server.command if triton.SHM_FLAG in a).split(triton.SHM_FLAG, 1)[1]
print(json.dumps({"server": server.pid, "kids": kids, "url": server.http_url, "shm": shm}), flush=True)
if sys.argv[1] == "hang":
    time.sleep(600)
"""


def clean_env() -> dict[str, str]:
    """An environment with no venv activated: the venv's python is called by its path only."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin"
    return env


def gone(pids: list[int], within: float) -> bool:
    def all_ended() -> bool:
        return not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]

    try:
        return process.wait_until(all_ended, within, f"processes {pids} to end")
    except TimeoutError:
        return False


def spawn_child(mode: str) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    line = child.stdout.readline()
    if not line:
        child.kill()
        pytest.fail("child could not start Triton:\n" + child.stderr.read())
    return child, json.loads(line)


def test_parent_killed_with_sigkill_leaves_no_orphans():
    child, info = spawn_child("hang")
    pids = [info["server"], *info["kids"]]
    assert len(pids) >= 3
    # the stubs of a server started from an unactivated venv found numpy: the model is ready
    assert requests.get(f"{info['url']}/v2/models/metrics_demo/ready", timeout=5).status_code == 200
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert gone(pids, within=30), f"still running after the parent died: {pids}"
    scrape.settle(lambda: sorted(Path("/dev/shm").glob(f"{info['shm']}*")), [], timeout=10, what="the stubs' /dev/shm")


def test_interpreter_exit_without_stop_stops_the_server():
    child, info = spawn_child("exit")
    child.wait(timeout=60)
    assert gone([info["server"], *info["kids"]], within=20)


def test_two_servers_at_once_do_not_collide():
    only = ["metrics_demo"]
    with (
        triton.start(paths.MODEL_REPOSITORY, models=only) as first,
        triton.start(paths.MODEL_REPOSITORY, models=only) as second,
    ):
        assert first.ports != second.ports
        assert first.is_ready() and second.is_ready()


def test_step_models_and_wrong_api(tmp_path):
    steps = sorted((paths.NOTEBOOKS / "steps").glob("step*.py"))
    assert len(steps) >= 3
    expected = ["demo_requests_total", "demo_inflight_requests", "demo_request_duration_seconds"]
    repo = tmp_path / "repo"
    for number, step in enumerate(steps, start=1):
        repository.add_model(repo, f"step{number}", step)
    with triton.start(repo) as server:
        for number in range(1, len(steps) + 1):
            client = traffic.make_client(server, "http")
            out = traffic.infer(client, np.array([1.0, 2.0, 4.0], dtype=np.float32), model=f"step{number}")
            assert out.shape == (3,)
        text = requests.get(server.metrics_url, timeout=5).text
    for number, name in enumerate(expected, start=1):
        # each step adds one family: step n shows families 1..n
        assert f"# TYPE {name} " in text, f"{name} missing after step {number}"
    wrong = paths.NOTEBOOKS / "steps" / "wrong_api.py"
    repository.add_model(tmp_path / "wrong", "wrong_api", wrong)
    with pytest.raises(triton.TritonStartError, match="has no attribute 'Metrics'"):
        triton.start(tmp_path / "wrong")


def test_log_is_readable_while_running_and_after(server):
    assert "Started GRPCInferenceService at 127.0.0.1" in server.log()
    assert len(server.log_tail(5).splitlines()) <= 5
    assert Path(server.log_path).exists()


def test_phases_record_every_span_and_open_loop_keeps_its_schedule(server):
    phases = [
        traffic.Phase("ramp", duration=1.0, rate=20),
        traffic.Phase("idle", duration=0.5),
        traffic.Phase("burst", duration=1.0, concurrency=2, error_rate=0.5),
    ]
    frame = traffic.run_phases(server, phases, progress=False)
    spans = frame.attrs["phases"]
    assert list(spans["phase"]) == ["ramp", "idle", "burst"]
    idle = spans.iloc[1]
    assert idle.end - idle.start >= 0.5 - 1e-3  # the idle phase lasted its duration, however busy the machine
    assert (spans["start"].iloc[1:].to_numpy() >= spans["end"].iloc[:-1].to_numpy()).all()  # back to back
    assert not frame["start"].between(idle.start, idle.end, inclusive="neither").any()  # nothing sent while idle
    assert set(frame["phase"]) == {"ramp", "burst"}
    ramp = frame[frame["phase"] == "ramp"].sort_values("scheduled")
    assert len(ramp) == 20
    assert np.diff(ramp["scheduled"].to_numpy()) == pytest.approx(0.05, abs=1e-6)  # the schedule, not the send
    assert (ramp["start"] >= ramp["scheduled"] - 1e-3).all()
    burst = frame[frame["phase"] == "burst"]
    assert (burst["ok"] == ~burst["bad"]).all()


def test_whole_repository_loads_as_docker_would_load_it():
    """docker/run_triton.sh and the compose stack load every model in model_repository/."""
    folders = sorted(p.name for p in paths.MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").exists())
    assert "metrics_demo" in folders
    with triton.start(paths.MODEL_REPOSITORY, timeout=180) as server:
        index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10).json()
    states = {m["name"]: m.get("state") for m in index}
    assert set(folders) <= set(states), f"not in the index: {set(folders) - set(states)}"
    assert {name: state for name, state in states.items() if state != "READY"} == {}


def test_the_stub_ignores_pythonpath(tmp_path, monkeypatch):
    """Why labkit relies on PATH: a module reachable only through PYTHONPATH is not seen by model.py."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "course_sentinel.py").write_text("VALUE = 1\n")
    model_py = tmp_path / "model.py"
    model_py.write_text(
        "import course_sentinel  # noqa\n\n\n"
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    repository.add_model(tmp_path / "repo", "sentinel", model_py)
    monkeypatch.setenv("PYTHONPATH", str(extra))
    with pytest.raises(triton.TritonStartError, match="No module named 'course_sentinel'"):
        triton.start(tmp_path / "repo")
