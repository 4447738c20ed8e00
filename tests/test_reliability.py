"""Reliability of the course's machinery on a real tritonserver 2.51.0 (and a real Prometheus).

- exact counts: 20,000 requests from 16 concurrent gRPC clients to a 2-instance model;
- a catalogue of bad inputs: each gets a clear error, the error counter moves by exactly
  the number that reached the model, and the server stays up;
- no orphaned ``tritonserver``/``prometheus`` after a notebook run, a failing test, or a
  SIGKILLed parent; every listener on 127.0.0.1; two test runs at once;
- a model's stub process killed while traffic flows;
- ``labkit.scrape`` on a stopped server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import nbformat
import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from nbclient import NotebookClient
from tritonclient.utils import InferenceServerException

from labkit import paths, process, repository, scrape, traffic, triton

from .conftest import require_tool

pytestmark = pytest.mark.integration

PROMETHEUS_HINT = "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"
COUNTERS = {
    "success": ("demo_requests_total", {"outcome": "success"}),
    "error": ("demo_requests_total", {"outcome": "error"}),
    "hist_count": ("demo_request_duration_seconds_count", {}),
    "nv_success": ("nv_inference_request_success", {"model": "metrics_demo"}),
    "nv_failure": ("nv_inference_request_failure", {"model": "metrics_demo"}),
}


def counts(server) -> dict[str, float]:
    frame = scrape.scrape(server.metrics_url)
    return {name: scrape.value(frame, sample, **labels) for name, (sample, labels) in COUNTERS.items()}


def moved(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def settled_counts(server) -> dict[str, float]:
    """counts() once Triton's own count has caught up with the model's.

    Triton moves ``nv_inference_request_success`` just after the response leaves, so a scrape right
    after the last answer (an earlier test's included) can be a request short. At rest every request
    that reached the model is one Triton success (its error responses included): read again (bounded).
    """
    now = counts(server)
    at_rest = {**now, "nv_success": now["success"] + now["error"]}
    return scrape.settle(lambda: counts(server), at_rest, what="Triton's count catching up with the model's")


@pytest.fixture(scope="module")
def demo():
    """A server with only the reference model (2 instances), whatever else model_repository/ holds."""
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
        yield server


def alive(pids) -> list[int]:
    """The pids that still run (zombies count as gone: they hold no port and do no work)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids, within: float = 30.0) -> list[int]:
    with contextlib.suppress(TimeoutError):
        process.wait_until(lambda: not alive(pids), within, f"processes {pids} to end")
    return alive(pids)


def processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line contains ``marker`` (a path unique to one run)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if marker in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmd[:200]}")
    return found


def group_listeners(pgids) -> dict[str, set[str]]:
    """Every listening TCP address of every process in the given process groups, by process."""
    found: dict[str, set[str]] = {}
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if os.getpgid(proc.pid) not in pgids:
                continue
            addrs = {
                f"{c.laddr.ip.removeprefix('::ffff:')}:{c.laddr.port}"
                for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if addrs:
            found[f"{proc.info['name']}[{proc.pid}]"] = addrs
    return found


# ------------------------------------------------------------------------ exact counts


def test_exact_counts_20000_requests_16_clients(demo):
    config = requests.get(f"{demo.http_url}/v2/models/metrics_demo/config", timeout=10).json()
    assert sum(g["count"] for g in config["instance_group"]) >= 2  # several instances share the series
    before = settled_counts(demo)
    run = traffic.closed_loop(demo, concurrency=16, requests=20_000, sizes=16, protocol="grpc", progress=False)
    assert len(run) == 20_000 and run["ok"].all()
    expected = {"success": 20_000, "error": 0, "hist_count": 20_000, "nv_success": 20_000, "nv_failure": 0}
    # Triton bumps its own counters just after the response leaves: read again (bounded) until exact
    change = scrape.settle(lambda: moved(before, counts(demo)), expected, what="counters moved by")
    span = run["end"].max() - run["start"].min()
    print(f"\n20000 requests, 16 gRPC clients: {span:.1f} s, {len(run) / span:.0f} req/s; counters moved by {change}")
    assert scrape.value(scrape.scrape(demo.metrics_url), "demo_inflight_requests") == 0


# ------------------------------------------------------------------ bad-input catalogue


def http_post(body: bytes | dict, path: str = "/v2/models/metrics_demo/infer") -> Callable:
    def send(server) -> tuple[str, str]:
        data = json.dumps(body) if isinstance(body, dict) else body
        response = requests.post(f"{server.http_url}{path}", data=data, timeout=60)
        return str(response.status_code), response.json()["error"]

    return send


def one_input(shape, data, datatype="FP32") -> dict:
    return {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": shape, "data": data}]}


def client_call(protocol: str, values: np.ndarray, datatype: str = "FP32", **kwargs) -> Callable:
    def send(server) -> tuple[str, str]:
        client = traffic.make_client(server, protocol)
        module = grpcclient if protocol == "grpc" else httpclient
        tensor = module.InferInput("INPUT0", list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        try:
            client.infer(kwargs.get("model", "metrics_demo"), [tensor], model_version=kwargs.get("version", ""))
        except InferenceServerException as err:
            return str(err.status()), err.message()
        finally:
            client.close()
        return "OK", ""

    return send


@dataclass(frozen=True)
class Bad:
    name: str
    send: Callable
    status: str
    message: str
    reaches_model: bool


CATALOGUE = [
    Bad("malformed JSON body", http_post(b'{"inputs": [{"name": "INPUT0",'), "500",
        "failed to parse the request JSON buffer", False),
    Bad("wrong datatype INT32 (HTTP)", http_post(one_input([2], [1, 2], "INT32")), "400",
        "inference input 'INPUT0' data-type is 'INT32', but model 'metrics_demo' expects 'FP32'", False),
    Bad("wrong datatype FP64 (gRPC)", client_call("grpc", np.ones(3), "FP64"), "StatusCode.INVALID_ARGUMENT",
        "inference input 'INPUT0' data-type is 'FP64', but model 'metrics_demo' expects 'FP32'", False),
    Bad("wrong shape [1, 3]", http_post(one_input([1, 3], [1, 2, 3])), "400",
        "unexpected shape for input 'INPUT0' for model 'metrics_demo'. Expected [-1], got [1,3]", False),
    Bad("missing input", http_post({"inputs": []}), "400",
        "expected 1 inputs but got 0 inputs for model 'metrics_demo'", False),
    Bad("unknown input name", http_post({"inputs": [{**one_input([1], [1])["inputs"][0], "name": "INPUT9"}]}), "400",
        "unexpected inference input 'INPUT9' for model 'metrics_demo'", False),
    Bad("shape and data disagree", http_post(one_input([4], [1, 2])), "500",
        "Unable to parse 'data': Shape does not match true shape of 'data' field", False),
    Bad("NaN (JSON)", http_post(one_input([3], [1.0, float("nan"), 2.0])), "500",
        "metrics_demo: INPUT0 contains NaN or infinity (first at index 1)", True),
    Bad("infinity (gRPC)", client_call("grpc", np.array([np.inf, 1.0], dtype=np.float32)), "StatusCode.INTERNAL",
        "metrics_demo: INPUT0 contains NaN or infinity (first at index 0)", True),
    Bad("empty tensor [0]", http_post(one_input([0], [])), "500", "metrics_demo: INPUT0 is empty", True),
    Bad("oversized: 17,000,000 values, a 68 MB body (HTTP)", client_call("http", np.ones(17_000_000, np.float32)),
        "500", "metrics_demo: INPUT0 has 17000000 values; the limit is 4096", True),
    Bad("4097 values (gRPC)", client_call("grpc", np.ones(4097, np.float32)), "StatusCode.INTERNAL",
        "metrics_demo: INPUT0 has 4097 values; the limit is 4096", True),
    Bad("unknown model (HTTP)", http_post(one_input([1], [1]), "/v2/models/no_such_model/infer"), "404",
        "Request for unknown model: 'no_such_model' is not found", False),
    Bad("unknown model (gRPC)", client_call("grpc", np.ones(2, np.float32), model="no_such_model"),
        "StatusCode.NOT_FOUND", "Request for unknown model: 'no_such_model' is not found", False),
    Bad("unknown version 7 (HTTP)", http_post(one_input([1], [1]), "/v2/models/metrics_demo/versions/7/infer"),
        "404", "Request for unknown model: 'metrics_demo' version 7 is not found", False),
    Bad("unknown version 7 (gRPC)", client_call("grpc", np.ones(2, np.float32), version="7"),
        "StatusCode.NOT_FOUND", "Request for unknown model: 'metrics_demo' version 7 is not found", False),
]  # fmt: skip


@pytest.mark.parametrize("bad", CATALOGUE, ids=lambda b: b.name)
def test_bad_input_catalogue(demo, bad):
    before = settled_counts(demo)  # each case ends with a good request, which Triton counts just after it answers
    status, message = bad.send(demo)
    print(f"\n{bad.name}: {status} {message}")
    assert status == bad.status
    assert bad.message in message
    reached = int(bad.reaches_model)
    # the model's error counter moves once per request that reached it; Triton counts the
    # model's error *response* as an inference success (just after it answers: read again, bounded)
    expected = {"success": 0, "error": reached, "hist_count": 0, "nv_success": reached, "nv_failure": 0}
    scrape.settle(lambda: moved(before, counts(demo)), expected, what=f"{bad.name}: counters moved by")
    assert demo.is_ready()
    client = traffic.make_client(demo, "http")
    assert traffic.infer(client, np.array([1.0, 3.0], dtype=np.float32)).tolist() == [1.0, 1.0]
    client.close()


def test_catalogue_is_broad():
    assert len(CATALOGUE) >= 8
    assert any(b.reaches_model for b in CATALOGUE) and not all(b.reaches_model for b in CATALOGUE)


# ----------------------------------------------------------------- no orphans, loopback


NOTEBOOK_CELLS = [
    """\
import json
from labkit import prometheus, traffic, triton
server = triton.start({repo!r})
handles = [server]
if {with_prometheus}:
    handles.append(prometheus.start([server], scrape_interval=0.5))
print(json.dumps({{"pids": [h.pid for h in handles], "commands": [h.command for h in handles]}}))
""",
    """\
run = traffic.closed_loop(server, concurrency=2, requests=50, sizes=16, progress=False)
if len(handles) > 1:
    handles[1].wait_for_samples("up", count=2)
print(int(run["ok"].sum()))
""",
    # no stop cell: the learner closes the notebook with the servers still running
]


def test_notebook_run_binds_loopback_only_and_leaves_nothing(tmp_path):
    with_prometheus = bool(require_tool_or_none("prometheus"))
    repo = tmp_path / "repo-notebook-run"
    repository.copy_reference(repo)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(repo=str(repo), with_prometheus=with_prometheus))
                for c in NOTEBOOK_CELLS]  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        info = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
        client.execute_cell(nb.cells[1], 1)
        assert nb.cells[1].outputs[-1]["text"].strip() == "50"
        listeners = group_listeners(set(info["pids"]))
        family = [p.pid for pid in info["pids"] for p in psutil.Process(pid).children(recursive=True)]
    print("\nlisteners:", listeners)
    assert len(listeners) >= 1 + with_prometheus  # tritonserver (and prometheus) listen
    assert sum(len(a) for a in listeners.values()) >= 3 + with_prometheus
    assert all(addr.startswith("127.0.0.1:") for addrs in listeners.values() for addr in addrs), listeners
    # the kernel is gone; so must be every process the notebook started
    assert not wait_gone([*info["pids"], *family]), "still running after the kernel shut down"
    assert not processes_mentioning(str(repo))
    for command in info["commands"][1:]:
        config = next(a for a in command if a.startswith("--config.file="))
        assert not processes_mentioning(config)


def require_tool_or_none(binary: str) -> str | None:
    """The tool's path; None where it is missing (outside CI: those parts are left out, with a note)."""
    try:
        return require_tool(binary, PROMETHEUS_HINT)
    except pytest.skip.Exception as skip:
        warnings.warn(f"the {binary} part of this test is left out: {skip}", stacklevel=2)
        return None


FAILING_TEST = """\
import json
from labkit import prometheus, triton


def test_starts_servers_then_fails():
    server = triton.start({repo!r}, models=["metrics_demo"])
    pids = [server.pid]
    if {with_prometheus}:
        pids.append(prometheus.start([server]).pid)
    print("PIDS", json.dumps(pids))
    assert False, "failing on purpose"
"""


def inner_pytest_env() -> dict[str, str]:
    """The environment for a pytest run inside a test: no third-party plugins, which these tiny files do not need."""
    return {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_failing_test_leaves_no_server_behind(tmp_path):
    with_prometheus = bool(require_tool_or_none("prometheus"))
    repo = tmp_path / "repo-failing-test"
    repository.copy_reference(repo)
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(FAILING_TEST.format(repo=str(repo), with_prometheus=with_prometheus))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=inner_pytest_env(),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failing on purpose" in done.stdout
    pids = json.loads(next(ln for ln in done.stdout.splitlines() if "PIDS" in ln).split("PIDS", 1)[1])
    assert len(pids) == 1 + with_prometheus
    assert not wait_gone(pids, within=20)
    assert not processes_mentioning(str(repo))


CHILD = """
import json, sys, time
from labkit import prometheus, triton
server = triton.start(sys.argv[1], models=["metrics_demo"])
prom = prometheus.start([server])
import psutil
kids = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
print(json.dumps({"pids": [server.pid, prom.pid, *kids]}), flush=True)
time.sleep(600)
"""


def test_sigkilled_parent_leaves_no_prometheus_or_triton(tmp_path):
    require_tool("prometheus", PROMETHEUS_HINT)
    repo = tmp_path / "repo-sigkill"
    repository.copy_reference(repo)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(repo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = child.stdout.readline()
    if not line:
        child.kill()
        pytest.fail("the child could not start its servers:\n" + child.stderr.read())
    pids = json.loads(line)["pids"]
    assert len(alive(pids)) == len(pids) >= 4  # triton, prometheus, two stubs
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not wait_gone(pids, within=30), "still running after the parent was SIGKILLed"
    assert not processes_mentioning(str(repo))


TWIN_TEST = """\
import contextlib, pathlib, time
from labkit import paths, process, scrape, traffic, triton


def test_own_server_exact_counts():
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
        up = time.time()
        print("PORTS", server.ports.http, server.ports.grpc, server.ports.metrics)
        pathlib.Path("up").touch()  # meet the other run: each sends its traffic while both servers are up
        with contextlib.suppress(TimeoutError):  # past 120 s, go on alone (the outer test's overlap check fails)
            process.wait_until(pathlib.Path("{other}", "up").exists, 120, "the other run's server", interval=0.1)
        before = scrape.scrape(server.metrics_url)
        run = traffic.closed_loop(server, concurrency=4, requests=400, sizes=16, progress=False)
        after = scrape.scrape(server.metrics_url)
        print("SERVING", up, time.time())
        sample = "demo_requests_total"
        assert run["ok"].all()
        assert scrape.value(after, sample, outcome="success") - scrape.value(before, sample, outcome="success") == 400
"""


def test_two_test_runs_at_once_do_not_collide(tmp_path):
    runs = []
    for number in (1, 2):
        folder = tmp_path / f"run{number}"
        folder.mkdir()
        (folder / "test_twin.py").write_text(TWIN_TEST.format(other=tmp_path / f"run{3 - number}"))
        runs.append(
            subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_twin.py"],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    ports = [set(next(ln for ln in out.splitlines() if "PORTS" in ln).split()[1:]) for out in outputs]
    assert ports[0].isdisjoint(ports[1])
    # each run's server was up from `up` to `done` (its traffic in between): the two spans overlapped
    spans = [[float(x) for x in next(ln for ln in out.splitlines() if "SERVING" in ln).split()[1:]] for out in outputs]
    (up1, done1), (up2, done2) = spans
    assert max(up1, up2) < min(done1, done2), f"the runs did not overlap: server spans {spans}"


# ------------------------------------------------------------------ a stub killed mid-run


def test_stub_killed_mid_run_is_reported_and_a_fresh_start_works():
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
    try:
        stubs = [p for p in psutil.Process(server.pid).children(recursive=True) if "stub" in p.name()]
        assert len(stubs) == 2
        before = counts(server)
        result = {}
        sender = threading.Thread(
            target=lambda: result.update(
                run=traffic.closed_loop(server, concurrency=4, duration=4, sizes=64, protocol="grpc", progress=False)
            )
        )
        sender.start()

        def flowing() -> bool:
            return counts(server)["success"] > before["success"]

        # kill once the model has answered (traffic flows), not after a guessed pause
        scrape.settle(flowing, True, timeout=60, what="the model answering the first requests")
        stubs[0].kill()  # SIGKILL one model instance's process while traffic flows
        sender.join()
        run = result["run"]
        failed = run[~run["ok"]]
        print(f"\n{len(run)} sent, {len(failed)} failed: {failed['error'].value_counts().to_dict()}")
        assert len(failed) >= 1
        assert failed["error"].str.fullmatch(r"Stub process 'metrics_demo_0_[01]' is not healthy\.").all()
        # Triton counts every failure (just after it answers: read again); the model no error
        expected = {"error": 0, "nv_failure": len(failed)}
        scrape.settle(
            lambda: {k: v for k, v in moved(before, counts(server)).items() if k in expected},
            expected,
            what="counters moved by",
        )
        # the model counts what it computed: every answered request, plus at most the one the killed instance had
        # computed and counted when it died, whose answer was lost (one request at a time per instance here)
        served = len(run) - len(failed)
        counted = moved(before, counts(server))["success"]
        assert counted - served in (0, 1), f"the model counted {counted:g} successes, {served} were answered"
        # Triton 2.51.0 does not restart the stub, and readiness does not show the damage
        assert requests.get(f"{server.http_url}/v2/models/metrics_demo/ready", timeout=5).status_code == 200
        assert server.is_ready()
        family = [server.pid, *(p.pid for p in psutil.Process(server.pid).children(recursive=True))]
    finally:
        server.stop()
    assert not wait_gone(family, within=20)
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as fresh:
        client = traffic.make_client(fresh, "grpc")
        for _ in range(4):  # both instances answer
            assert traffic.infer(client, np.array([1.0, 3.0], dtype=np.float32)).tolist() == [1.0, 1.0]
        client.close()


# -------------------------------------------------------------- scrape on a stopped server


def test_scrape_a_stopped_server_names_the_url():
    server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"])
    url = server.metrics_url
    assert scrape.value(scrape.scrape(url), "demo_requests_total") == 0
    server.stop()
    with pytest.raises(scrape.ScrapeError, match=f"could not reach {url}: ConnectionError"):
        scrape.scrape(url, timeout=2)
    sampler = scrape.Sampler(url, interval=0.1, timeout=1)
    sampler.start()
    # it keeps polling the dead URL and records each failure, rather than stopping at the first
    scrape.settle(lambda: len(sampler.errors) >= 2, True, timeout=30, what="the sampler's second failed scrape")
    frame = sampler.stop()
    assert frame.empty and len(sampler.errors) >= 3  # and the final scrape at stop() is recorded too
    assert all(url in message for _, message in sampler.errors)
