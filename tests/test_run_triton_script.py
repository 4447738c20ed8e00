"""docker/run_triton.sh, run for real with a stub `docker` that records its arguments (no engine needed).

macOS ships bash 3.2, and there Docker is the only way to run Triton. Under `set -u`, bash before 4.4 takes
``"${a[@]}"`` of an empty array for an unbound variable and stops. bash 3.2 cannot be installed here, so the test
is static: every array the script may leave empty is expanded as ``${a[@]+"${a[@]}"}``, which expands to nothing
there (and in every later bash); then shellcheck, then the script runs with its optional arrays empty and filled.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from labkit import TRITON_IMAGE, triton
from tests import monitoring_files as mf
from tests.conftest import require_tool

SCRIPT = mf.DOCKER / "run_triton.sh"
IMAGE = "triton-metrics-triton:local"  # what docker/triton.Dockerfile builds (compose.yaml tags it the same)
SHELLCHECK_INSTALL = "sudo apt-get install shellcheck (Debian/Ubuntu; .ci/run installs it), or brew install shellcheck"
# python_backend's Quick Start: docker run --shm-size=1g --ulimit memlock=-1 ... --ulimit stack=67108864
SHM_AND_ULIMITS = ["--shm-size=1g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]


def empty_array_expansions(text: str) -> list[str]:
    """Lines that expand, as ``"${name[@]}"``, an array the script may leave empty (assigned ``()`` somewhere):
    bash < 4.4 stops there under `set -u`. ``${name[@]+"${name[@]}"}`` is the form that works everywhere."""
    may_be_empty = set(re.findall(r"(?m)^\s*(?:local\s+)?(\w+)=\(\s*\)", text))
    found = []
    for match in re.finditer(r'"\$\{(\w+)\[[@*]\]\}"', text):
        name = match.group(1)
        guarded = text[: match.start()].endswith(f"${{{name}[@]+") and text[match.end() :].startswith("}")
        if name in may_be_empty and not guarded:
            found.append(text[text.rfind("\n", 0, match.start()) + 1 : text.find("\n", match.end())].strip())
    return found


def test_no_array_that_may_be_empty_is_expanded_unguarded():
    assert empty_array_expansions(SCRIPT.read_text()) == []


def test_the_expansion_check_finds_the_bash_32_failure():
    """The form that stopped bash 3.2 (`gpu_flags: unbound variable` without GPUS) is caught; the guarded one is not."""
    old = 'gpu_flags=()\ncmd=(docker run --rm "${gpu_flags[@]}"\n  --shm-size=1g)\n'
    assert empty_array_expansions(old) == ['cmd=(docker run --rm "${gpu_flags[@]}"']
    assert empty_array_expansions(old.replace('"${gpu_flags[@]}"', '${gpu_flags[@]+"${gpu_flags[@]}"}')) == []
    assert empty_array_expansions('cmd=(docker run)\nexec "${cmd[@]}"\n') == []  # never empty: fine


@pytest.mark.parametrize("path", [SCRIPT, mf.DOCKER.parent / ".ci" / "run"], ids=["run_triton.sh", ".ci/run"])
def test_shellcheck(path):
    shellcheck = require_tool("shellcheck", SHELLCHECK_INSTALL)
    out = subprocess.run([shellcheck, "--shell=bash", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def run_script(tmp_path: Path, **env: str) -> list[str]:
    """Run docker/run_triton.sh (not a dry run) with a stub `docker` first on PATH; return the arguments it got."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    argv = tmp_path / "docker-argv"
    stub = stub_dir / "docker"
    stub.write_text(f'#!/bin/sh\n{{ for arg in "$@"; do printf "%s\\n" "$arg"; done; echo ---; }} >> "{argv}"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{stub_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    *build, run = [call.strip("\n").splitlines() for call in argv.read_text().split("---\n") if call.strip()]
    assert build == [built(env.get("TRITON_IMAGE", TRITON_IMAGE))], "the image is built before every run"
    argv.unlink()
    return run


def built(base: str) -> list[str]:
    """The `docker build` of the course's image: TRITON_IMAGE plus the models' Python packages."""
    dockerfile = mf.DOCKER / "triton.Dockerfile"
    return [
        "build",
        "--quiet",
        "-t",
        IMAGE,
        "--build-arg",
        f"TRITON_IMAGE={base}",
        "-f",
        str(dockerfile),
        str(mf.DOCKER),
    ]


def expected(repository: Path, gpu: list[str], dropin: list[str]) -> list[str]:
    return [
        "run", "--rm", *gpu, *SHM_AND_ULIMITS,
        "-p", "127.0.0.1:8000:8000", "-p", "127.0.0.1:8001:8001", "-p", "127.0.0.1:8002:8002",
        "-v", f"{repository.resolve()}:/models:ro", *dropin,
        IMAGE, "tritonserver",
        "--model-repository=/models", "--allow-metrics=true", "--metrics-interval-ms=1000",
    ]  # fmt: skip


def test_runs_docker_with_the_course_repository(tmp_path):
    repository = mf.DOCKER.parent / "model_repository"
    dropin = ["-v", f"{(mf.DOCKER.parent / 'dropin').resolve()}:/dropin:ro"]
    assert run_script(tmp_path) == expected(repository, [], dropin)
    assert run_script(tmp_path, GPUS="all") == expected(repository, ["--gpus", "all"], dropin)


def test_runs_with_every_optional_array_empty(tmp_path):
    """No GPUS and a repository without dropin/ beside it: both optional arrays empty, the case bash 3.2 stopped on."""
    repository = tmp_path / "models"
    repository.mkdir()
    assert run_script(tmp_path, MODEL_REPOSITORY=str(repository)) == expected(repository, [], [])
    ports = run_script(tmp_path, MODEL_REPOSITORY=str(repository), HTTP_PORT="18000", GRPC_PORT="18001")
    assert ports[ports.index("-p") + 1] == "127.0.0.1:18000:8000" and "127.0.0.1:18001:8001" in ports


def test_script_compose_and_labkit_pass_the_same_shm_and_ulimits(tmp_path):
    """--shm-size and the two ulimits of python_backend's Quick Start, the same in all three ways to run Docker."""
    repository = tmp_path / "models"
    repository.mkdir()
    script = run_script(tmp_path, MODEL_REPOSITORY=str(repository))
    labkit = triton.docker_command(repository, triton.Ports(1, 2, 3), name="n")
    for command in (script, labkit):
        start = command.index(SHM_AND_ULIMITS[0])
        assert command[start : start + len(SHM_AND_ULIMITS)] == SHM_AND_ULIMITS
    compose = mf.load_yaml(mf.COMPOSE)["services"]["triton"]
    assert f"--shm-size={compose['shm_size']}" == SHM_AND_ULIMITS[0]
    assert compose["ulimits"] == {"memlock": {"soft": -1, "hard": -1}, "stack": 67108864}


def test_the_image_is_built_from_the_chosen_triton_image(tmp_path):
    """TRITON_IMAGE chooses the base of the built image; the run uses what was built."""
    newer = "nvcr.io/nvidia/tritonserver:26.07-py3"
    run = run_script(tmp_path, TRITON_IMAGE=newer)  # run_script checks the build's base
    assert run[run.index("tritonserver") - 1] == IMAGE
