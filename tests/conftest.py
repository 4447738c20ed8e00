"""Shared fixtures: a real Triton on the reference model, tool checks, process checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from labkit import paths, triton

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(binary: str, install: str) -> str:
    """Path of ``binary``; fail in CI (the tools must be installed there), skip with the fix elsewhere."""
    found = shutil.which(binary)
    if found:
        return found
    message = f"`{binary}` is not installed. Install it with: {install}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def server():
    """One real Triton on model_repository/ for the tests that only send traffic."""
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], metrics_interval_ms=200) as handle:
        yield handle


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def our_tritonservers() -> list[psutil.Process]:
    """tritonserver and stub processes whose command line points into this checkout or a temp dir of ours."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if ("tritonserver" in cmd or "triton_python_backend_stub" in cmd) and "pytest" not in cmd:
            found.append(proc)
    return found


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this venv (not activated)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
