"""Check, on a machine with an NVIDIA GPU, that Triton exports GPU metrics next to custom ones.

Run from the repository root (the course's .venv, or any Python with numpy<2,
requests and the nvidia-pytriton wheel)::

    .venv/bin/python scripts/gpu_check.py

It starts the real ``tritonserver`` (labkit.triton, local mode) on a scratch
repository holding ``cookbook_batching`` with the KIND_GPU config of
``notebooks/gpu/cookbook_batching/config.pbtxt``, sends requests over HTTP
(plain ``requests``, no tritonclient), then prints and checks:

1. the model instance was placed on a GPU (Triton's log);
2. ``nv_gpu_utilization``, ``nv_gpu_memory_used_bytes`` and ``nv_gpu_power_usage``
   are on ``/metrics``;
3. the model's custom metrics moved (``cookbook_batch_size_count`` equals the
   number of execute() calls Triton counted) and carry ``device="GPU:0"``.

Exit code 0 when every check passes, 1 when one fails, 2 when there is no GPU.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # labkit from this checkout, installed or not

from labkit import paths, process, triton  # noqa: E402

MODEL = "cookbook_batching"
GPU_CONFIG = ROOT / "notebooks" / "gpu" / MODEL / "config.pbtxt"
GPU_METRICS = ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage")
CUSTOM_PREFIX = "cookbook_batch_"
REQUESTS = 400


def gpu_names() -> list[str]:
    """The GPUs ``nvidia-smi -L`` lists (empty when there is no driver or no GPU)."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []


def build_repository() -> Path:
    """A scratch repository: the CPU model's model.py with the KIND_GPU config."""
    repo = paths.scratch("gpu-check")
    (repo / MODEL / "1").mkdir(parents=True)
    shutil.copyfile(paths.MODEL_REPOSITORY / MODEL / "1" / "model.py", repo / MODEL / "1" / "model.py")
    shutil.copyfile(GPU_CONFIG, repo / MODEL / "config.pbtxt")
    return repo


def infer(http_url: str, rows: np.ndarray) -> np.ndarray:
    """One request through Triton's HTTP/JSON API (KServe v2 protocol)."""
    tensor = {"name": "INPUT0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    body = {"inputs": [tensor]}
    response = requests.post(f"{http_url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    if not response.ok:
        raise RuntimeError(f"HTTP {response.status_code} from {MODEL}: {response.text}")
    output = response.json()["outputs"][0]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def metric_lines(metrics_url: str, prefixes: tuple[str, ...]) -> list[str]:
    """Lines of /metrics whose metric name starts with one of ``prefixes`` (no comments)."""
    text = requests.get(metrics_url, timeout=10).text
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def value(lines: list[str], name: str) -> float:
    """Sum of the samples called exactly ``name``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)


def main() -> int:
    gpus = gpu_names()
    print("GPUs (nvidia-smi -L):", *(gpus or ["none"]), sep="\n  ")
    if not gpus:
        print("No NVIDIA GPU here: nv_gpu_* metrics appear only with one. Nothing checked.")
        return 2
    repo = build_repository()
    print(f"\nrepository: {repo} ({MODEL} with {GPU_CONFIG.relative_to(ROOT)})")
    failures: list[str] = []
    with triton.start(repo, mode="local", models=[MODEL], metrics_interval_ms=500) as server:
        print(f"Triton {triton.TRITON_VERSION} ready at {server.http_url}, metrics at {server.metrics_url}")
        placed = [line for line in server.log().splitlines() if "TRITONBACKEND_ModelInstanceInitialize" in line]
        print("\n[1] model instances:", *placed, sep="\n  ")
        if not any("GPU device" in line for line in placed):
            failures.append("the model instance was not placed on a GPU")

        rows = np.arange(4, dtype=np.float32).reshape(1, 4)
        np.testing.assert_allclose(infer(server.http_url, rows), rows * 2)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: infer(server.http_url, rows), range(REQUESTS)))
        print(f"\nsent {REQUESTS + 1} requests over HTTP in {time.perf_counter() - started:.1f} s (8 at a time)")

        gpu_lines: list[str] = []

        def gauges_shown() -> bool:
            gpu_lines[:] = metric_lines(server.metrics_url, GPU_METRICS)
            return all(any(line.startswith(name) for line in gpu_lines) for name in GPU_METRICS)

        with contextlib.suppress(TimeoutError):  # GPU gauges refresh every metrics interval; missing ones fail below
            process.wait_until(gauges_shown, 20, "the GPU gauges on /metrics", interval=0.5)
        print("\n[2] GPU metrics:", *(gpu_lines or ["(none)"]), sep="\n  ")
        for name in GPU_METRICS:
            if not any(line.startswith(name + "{") or line.startswith(name + " ") for line in gpu_lines):
                failures.append(f"{name} is not on /metrics")

        custom = metric_lines(server.metrics_url, (CUSTOM_PREFIX, "nv_inference_exec_count", "nv_inference_count"))
        shown = [line for line in custom if "_bucket" not in line]
        print("\n[3] custom metrics and Triton's counts:", *shown, sep="\n  ")
        executions = value(custom, "nv_inference_exec_count")
        observed = value(custom, "cookbook_batch_size_count")
        rows_seen = value(custom, "cookbook_batch_size_sum")
        print(f"  execute() calls: Triton {executions:.0f}, cookbook_batch_size_count {observed:.0f}")
        rows_counted = value(custom, "nv_inference_count")
        print(f"  rows: Triton nv_inference_count {rows_counted:.0f}, histogram sum {rows_seen:.0f}")
        if observed == 0 or observed != executions:
            failures.append(f"cookbook_batch_size_count ({observed}) != nv_inference_exec_count ({executions})")
        if not any('device="GPU:0"' in line for line in shown if line.startswith(CUSTOM_PREFIX)):
            failures.append('the custom series do not carry device="GPU:0"')

    print()
    for failure in failures:
        print("FAILED:", failure)
    if failures:
        return 1
    print(f"OK: {', '.join(GPU_METRICS)} and the custom metrics are on /metrics, with the model on a GPU.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
