"""The cookbook models of notebook 08 on a real tritonserver: each loads, answers, and its metrics move as taught."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from labkit import paths, process, scrape, triton

COOKBOOK = [
    "cookbook_batching",
    "cookbook_streaming",
    "cookbook_pipeline",
    "cookbook_normalize",
    "cookbook_score",
    "cookbook_instances",
]
GPU_CONFIG = paths.NOTEBOOKS / "gpu" / "cookbook_batching" / "config.pbtxt"
STEPS = ("normalize", "score", "postprocess")


# ----------------------------------------------------------------------- configs (no server)


def instance_groups(text: str) -> list[tuple[str, int]]:
    """(kind, count) of each instance_group entry of a config.pbtxt."""
    block = text.split("instance_group", 1)[1]
    kinds = re.findall(r"kind:\s*(KIND_\w+)", block)
    count_values = [int(c) for c in re.findall(r"count:\s*(\d+)", block)]
    return list(zip(kinds, count_values, strict=True))


@pytest.mark.parametrize("name", COOKBOOK)
def test_cookbook_model_is_light_and_named_after_its_folder(name):
    """Whoever starts all of model_repository/ loads these: one CPU instance each (two for cookbook_instances)."""
    folder = paths.MODEL_REPOSITORY / name
    text = (folder / "config.pbtxt").read_text()
    assert re.search(rf'^name:\s*"{name}"', text, re.MULTILINE)
    assert (folder / "1" / "model.py").is_file()
    assert instance_groups(text) == [("KIND_CPU", 2 if name == "cookbook_instances" else 1)]
    source = (folder / "1" / "model.py").read_text()
    assert "demo_" not in re.sub(r'""".*?"""', "", source, flags=re.S), "cookbook metrics must not use the demo_ prefix"


def test_gpu_variant_differs_only_in_its_instance_group():
    cpu = (paths.MODEL_REPOSITORY / "cookbook_batching" / "config.pbtxt").read_text()
    gpu = GPU_CONFIG.read_text()

    def body(text: str) -> str:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return "\n".join(lines).split("instance_group")[0]

    assert body(cpu) == body(gpu)
    assert instance_groups(gpu) == [("KIND_GPU", 1)]
    assert re.search(r"gpus:\s*\[\s*0\s*\]", gpu)


def test_gpu_check_script_says_plainly_when_there_is_no_gpu():
    """On a machine without a GPU the script exits 2 and says why; with one it must pass every check (exit 0)."""
    out = subprocess.run(
        [sys.executable, str(paths.ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True, timeout=300
    )
    if shutil.which("nvidia-smi") is None:
        assert out.returncode == 2, out.stdout + out.stderr
        assert "No NVIDIA GPU here" in out.stdout and "nv_gpu_* metrics appear only with one" in out.stdout
    else:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "OK: nv_gpu_utilization" in out.stdout


# --------------------------------------------------------------------------- on a real Triton


@pytest.fixture(scope="module")
def cookbook():
    """One Triton with the cookbook models (explicit model control), and a scrape taken before any traffic."""
    with triton.start(paths.MODEL_REPOSITORY, models=COOKBOOK) as server:
        yield server, scrape.scrape(server.metrics_url)


def moved(before, after, sample: str, **labels: str) -> float:
    return scrape.value(after, sample, **labels) - scrape.value(before, sample, **labels)


def send_rows(server, concurrency: int, per_client: int) -> None:
    def one(index: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        row = np.full((1, 4), index, dtype=np.float32)
        for _ in range(per_client):
            tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
            tensor.set_data_from_numpy(row)
            np.testing.assert_allclose(client.infer("cookbook_batching", [tensor]).as_numpy("OUTPUT0"), row * 2)
        client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))


@pytest.mark.integration
@pytest.mark.parametrize("concurrency", [1, 8])
def test_batch_size_histogram_matches_triton(cookbook, concurrency):
    server, _ = cookbook
    before = scrape.scrape(server.metrics_url)
    send_rows(server, concurrency, 160 // concurrency)
    after = scrape.scrape(server.metrics_url)
    calls = moved(before, after, "cookbook_batch_size_count", device="CPU:0")
    assert moved(before, after, "cookbook_batch_size_sum") == 160
    assert moved(before, after, "cookbook_batch_requests_per_execute_count") == calls

    def triton_moved() -> dict[str, float]:
        nonlocal after
        after = scrape.scrape(server.metrics_url)
        return {
            s: moved(before, after, s, model="cookbook_batching")
            for s in ("nv_inference_exec_count", "nv_inference_count")
        }

    # Triton counts just after the responses leave: read again (bounded) until its counts equal the model's
    expected = {"nv_inference_exec_count": calls, "nv_inference_count": 160}
    scrape.settle(triton_moved, expected, what="Triton's counts moved by")
    singles = moved(before, after, "cookbook_batch_size_bucket", le="1")  # le as Triton writes it
    if concurrency == 1:
        assert singles == calls == 160  # nobody else in the queue: every batch has one row
    else:
        assert singles < calls < 160  # batches of several rows formed
    queue_ms = moved(before, after, "nv_inference_queue_duration_us", model="cookbook_batching") / 160 / 1e3
    print(f"concurrency {concurrency}: {calls:.0f} execute calls, queue time {queue_ms:.2f} ms per request")


def open_streams(server, counts: list[int]) -> dict[str, dict]:
    """Send one request per count on one gRPC stream; return per request id: responses and final flag seen."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    arrivals: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: arrivals.put((result, error)))
    rows = {str(i): {"requested": c, "responses": 0, "tokens": [], "final": False} for i, c in enumerate(counts)}
    for key, count in zip(rows, counts, strict=True):
        tensor = grpcclient.InferInput("COUNT", [1], "INT32")
        tensor.set_data_from_numpy(np.array([count], dtype=np.int32))
        client.async_stream_infer("cookbook_streaming", [tensor], request_id=key, enable_empty_final_response=True)
    remaining = len(rows)
    while remaining:
        result, error = arrivals.get(timeout=30)
        assert error is None, error
        response = result.get_response()
        row = rows[response.id]
        if response.parameters["triton_final_response"].bool_param:
            row["final"] = True
            remaining -= 1
        else:
            row["responses"] += 1
            row["tokens"].append(int(result.as_numpy("TOKEN")[0]))
    client.stop_stream()
    client.close()
    return rows


@pytest.mark.integration
def test_streaming_metrics_follow_the_streams(cookbook):
    server, _ = cookbook
    counts = [0, 1, 3, 7, 12, 20, 5, 9]
    before = scrape.scrape(server.metrics_url)
    rows = open_streams(server, counts)
    after = scrape.scrape(server.metrics_url)
    for row in rows.values():
        assert row["final"] and row["tokens"] == list(range(row["requested"]))
    assert moved(before, after, "cookbook_stream_requests_total", outcome="success") == len(counts)
    assert moved(before, after, "cookbook_stream_responses_per_request_count") == len(counts)
    assert moved(before, after, "cookbook_stream_responses_per_request_sum") == sum(counts)
    # a stream of 0 responses has no first response
    assert moved(before, after, "cookbook_stream_time_to_first_response_seconds_count") == len(counts) - 1
    assert moved(before, after, "cookbook_stream_time_to_first_response_seconds_sum") >= 0.02 * (len(counts) - 1)
    assert scrape.value(after, "cookbook_stream_inflight") == 0


@pytest.mark.integration
def test_streaming_error_and_http_refusal(cookbook):
    server, _ = cookbook
    before = scrape.scrape(server.metrics_url)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    errors: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: errors.put(error))
    tensor = grpcclient.InferInput("COUNT", [1], "INT32")
    tensor.set_data_from_numpy(np.array([-1], dtype=np.int32))
    client.async_stream_infer("cookbook_streaming", [tensor], enable_empty_final_response=True)
    error = errors.get(timeout=10)
    client.stop_stream()
    client.close()
    assert isinstance(error, InferenceServerException) and "COUNT must be 0..64" in error.message()
    after = scrape.scrape(server.metrics_url)
    assert moved(before, after, "cookbook_stream_requests_total", outcome="error") == 1
    assert scrape.value(after, "cookbook_stream_inflight") == 0
    body = {"inputs": [{"name": "COUNT", "shape": [1], "datatype": "INT32", "data": [2]}]}
    response = requests.post(f"{server.http_url}/v2/models/cookbook_streaming/infer", json=body, timeout=30)
    assert response.status_code >= 400, "HTTP infer must refuse a decoupled model"


@pytest.mark.integration
def test_many_concurrent_streams_keep_the_server_up(cookbook):
    """Metric calls from the stream threads are serialized by a lock; without it this crashed Triton 2.51.0."""
    server, _ = cookbook
    for _ in range(2):
        rows = open_streams(server, [10] * 48)
        assert all(row["responses"] == 10 for row in rows.values())
    assert server.is_running()
    assert scrape.value(scrape.scrape(server.metrics_url), "cookbook_stream_inflight") == 0


@pytest.mark.integration
def test_pipeline_series_exist_before_the_first_error(cookbook):
    _, initial = cookbook
    for step in STEPS:
        assert len(scrape.select(initial, "cookbook_pipeline_step_errors_total", step=step)) == 1
        assert len(scrape.select(initial, "cookbook_pipeline_step_duration_seconds_count", step=step)) == 1


@pytest.mark.integration
def test_pipeline_counts_and_times_each_step(cookbook):
    server, _ = cookbook
    client = grpcclient.InferenceServerClient(server.grpc_url)
    good = -np.exp(np.linspace(0, 3, 64)).astype(np.float32)
    normalized = (good - good.mean()) / good.std()
    expected = np.float32(np.tanh(normalized.astype(np.float32)).mean())
    inputs = [good] * 20
    inputs += [np.array([1.0, np.nan], dtype=np.float32)] * 3 + [np.ones(2000, dtype=np.float32)] * 4
    before = scrape.scrape(server.metrics_url)
    messages = []
    for values in inputs:
        tensor = grpcclient.InferInput("INPUT0", [len(values)], "FP32")
        tensor.set_data_from_numpy(values)
        try:
            output = client.infer("cookbook_pipeline", [tensor]).as_numpy("OUTPUT0")
            np.testing.assert_allclose(output, [round(float(expected), 3), float(expected > 0)], atol=1e-3)
        except InferenceServerException as err:
            messages.append(err.message())
    client.close()
    after = scrape.scrape(server.metrics_url)
    assert sum("step normalize" in m for m in messages) == 3
    assert sum("step score" in m for m in messages) == 4
    errors = {s: moved(before, after, "cookbook_pipeline_step_errors_total", step=s) for s in STEPS}
    assert errors == {"normalize": 3, "score": 4, "postprocess": 0}
    ok = {s: moved(before, after, "cookbook_pipeline_step_duration_seconds_count", step=s) for s in STEPS}
    assert ok == {"normalize": 24, "score": 20, "postprocess": 20}
    assert moved(before, after, "cookbook_pipeline_requests_total", outcome="success") == 20
    assert moved(before, after, "cookbook_pipeline_requests_total", outcome="error") == 7

    def triton_moved() -> dict[str, float]:
        frame = scrape.scrape(server.metrics_url)
        success = "nv_inference_request_success"
        return {
            "pipeline success": moved(before, frame, success, model="cookbook_pipeline"),
            "normalize success": moved(before, frame, success, model="cookbook_normalize"),
            "score success": moved(before, frame, success, model="cookbook_score"),
            "pipeline failure": moved(before, frame, "nv_inference_request_failure", model="cookbook_pipeline"),
        }

    # Triton counts the error responses as successes, for the pipeline and for the models it calls; it counts
    # just after each response leaves: read again (bounded) until exact
    expected = {"pipeline success": 27, "normalize success": 27, "score success": 24, "pipeline failure": 0}
    scrape.settle(triton_moved, expected, what="nv_inference_request_* moved by")


def send_values(server, model: str, total: int, concurrency: int = 4) -> None:
    def one(_: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for _ in range(total // concurrency):
            tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
            tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
            np.testing.assert_allclose(client.infer(model, [tensor]).as_numpy("OUTPUT0"), 2.0)
        client.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))


@pytest.mark.integration
def test_per_instance_series_add_up_to_the_shared_one(cookbook):
    server, _ = cookbook
    before = scrape.scrape(server.metrics_url)
    send_values(server, "cookbook_instances", 100)
    after = scrape.scrape(server.metrics_url)
    per_instance = scrape.select(after, "cookbook_instance_requests_total")
    assert sorted(per_instance["instance"]) == ["cookbook_instances_0_0", "cookbook_instances_0_1"]
    assert moved(before, after, "cookbook_instance_requests_total") == 100
    assert moved(before, after, "cookbook_shared_requests_total") == 100


def model_state(server, model: str) -> str:
    index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10).json()
    return next(entry.get("state", "") for entry in index if entry["name"] == model)


@pytest.mark.integration
def test_series_across_unload_reload_and_scale_down():
    """What notebook 08 teaches about reloads on 2.51.0: series outlive an unload, counting carries on after a
    load, and an instance removed by an in-place count change leaves a frozen series."""
    repo = paths.scratch("test-cookbook")
    shutil.copytree(
        paths.MODEL_REPOSITORY / "cookbook_instances",
        repo / "cookbook_instances",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    url = None
    with triton.start(repo, models=["cookbook_instances"]) as server:
        url = f"{server.http_url}/v2/repository/models/cookbook_instances"
        send_values(server, "cookbook_instances", 40)
        loaded = scrape.scrape(server.metrics_url)

        requests.post(f"{url}/unload", timeout=60).raise_for_status()
        process.wait_until(
            lambda: model_state(server, "cookbook_instances") == "UNAVAILABLE",
            30,
            lambda: f"cookbook_instances to unload (state {model_state(server, 'cookbook_instances')!r})",
        )
        unloaded = scrape.scrape(server.metrics_url)
        assert scrape.select(unloaded, "nv_inference_count", model="cookbook_instances").empty
        assert scrape.value(unloaded, "cookbook_shared_requests_total") == 40
        for name in ("cookbook_instances_0_0", "cookbook_instances_0_1"):
            kept = scrape.value(unloaded, "cookbook_instance_requests_total", instance=name)
            assert kept == scrape.value(loaded, "cookbook_instance_requests_total", instance=name)

        requests.post(f"{url}/load", timeout=60).raise_for_status()
        send_values(server, "cookbook_instances", 40)
        reloaded = scrape.scrape(server.metrics_url)
        assert scrape.value(reloaded, "cookbook_shared_requests_total") == 80  # no reset
        assert scrape.value(reloaded, "cookbook_instance_requests_total") == 80

        config = repo / "cookbook_instances" / "config.pbtxt"
        config.write_text(config.read_text().replace("count: 2", "count: 1"))
        created = server.log().count("TRITONBACKEND_ModelInstanceInitialize")
        assert created >= 4, "two loads of 2 instances: each instance created is a log line (else 0 == 0 below)"
        requests.post(f"{url}/load", timeout=60).raise_for_status()
        before = scrape.scrape(server.metrics_url)
        send_values(server, "cookbook_instances", 40)
        after = scrape.scrape(server.metrics_url)
        assert server.log().count("TRITONBACKEND_ModelInstanceInitialize") == created  # changed in place
        growth = sorted(
            moved(before, after, "cookbook_instance_requests_total", instance=f"cookbook_instances_0_{i}")
            for i in (0, 1)
        )
        assert growth == [0, 40], "one series frozen, the survivor's takes every request"
        assert moved(before, after, "cookbook_shared_requests_total") == 40
    assert url is not None
