"""labkit.triton without a server: the commands it builds, its environment, its error messages."""

from __future__ import annotations

import os
import sys

import pytest

from labkit import TRITON_IMAGE, triton

PORTS = triton.Ports(http=18000, grpc=18001, metrics=18002)


def test_docker_command_is_exact(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_IMAGE", raising=False)
    cmd = triton.docker_command(tmp_path, PORTS, name="labkit-triton-test")
    assert cmd == [
        "docker", "run", "--rm", "--name", "labkit-triton-test",
        "--shm-size=1g", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",  # python_backend's Quick Start
        "-p", "127.0.0.1:18000:8000",
        "-p", "127.0.0.1:18001:8001",
        "-p", "127.0.0.1:18002:8002",
        "-v", f"{tmp_path.resolve()}:/models:ro",
        TRITON_IMAGE,
        "tritonserver",
        "--model-repository=/models",
        "--http-port=8000", "--grpc-port=8001",
        "--allow-metrics=true", "--metrics-port=8002",
        "--exit-timeout-secs=3", "--log-verbose=0",
    ]  # fmt: skip


def test_default_image_is_pinned_and_triton_image_overrides_it(tmp_path, monkeypatch):
    """One variable chooses the image: TRITON_IMAGE (as in docker/run_triton.sh and docker/compose.yaml)."""
    assert TRITON_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"  # the release of the local binary, 2.51.0
    monkeypatch.delenv("TRITON_IMAGE", raising=False)
    assert triton.docker_image() == TRITON_IMAGE
    monkeypatch.setenv("TRITON_IMAGE", "")  # set but empty: the default, as ${TRITON_IMAGE:-...} does
    assert triton.docker_image() == TRITON_IMAGE
    monkeypatch.setenv("TRITON_IMAGE", "nvcr.io/nvidia/tritonserver:26.07-py3")
    assert triton.docker_image() == "nvcr.io/nvidia/tritonserver:26.07-py3"
    assert triton.docker_image("my/triton:1") == "my/triton:1"  # an explicit image wins
    cmd = triton.docker_command(tmp_path, PORTS, name="n")
    assert cmd[cmd.index("tritonserver") - 1] == "nvcr.io/nvidia/tritonserver:26.07-py3"
    cmd = triton.docker_command(tmp_path, PORTS, name="n", image="my/triton:1")
    assert cmd[cmd.index("tritonserver") - 1] == "my/triton:1"


@pytest.mark.parametrize(
    ("env", "given", "expected"),
    [
        (None, None, TRITON_IMAGE),
        ("nvcr.io/nvidia/tritonserver:26.07-py3", None, "nvcr.io/nvidia/tritonserver:26.07-py3"),
        ("nvcr.io/nvidia/tritonserver:26.07-py3", "my/triton:1", "my/triton:1"),
    ],
)
def test_start_in_docker_runs_the_chosen_image(tmp_path, monkeypatch, env, given, expected):
    """start(mode="docker") without image= takes $TRITON_IMAGE, else the pinned default (no engine needed)."""
    started = []

    class FakeServer:  # records the command instead of running it
        def __init__(self, command, *args, **kwargs):
            started.append(command)

        def wait_ready(self, timeout):
            pass

    if env is None:
        monkeypatch.delenv("TRITON_IMAGE", raising=False)
    else:
        monkeypatch.setenv("TRITON_IMAGE", env)
    monkeypatch.setattr(triton, "docker_available", lambda: (True, "a fake engine"))
    monkeypatch.setattr(triton, "TritonServer", FakeServer)
    triton.start(tmp_path, mode="docker", image=given)
    (command,) = started
    assert command[:2] == ["docker", "run"] and command[command.index("tritonserver") - 1] == expected


def test_docker_command_gpus_and_options(tmp_path):
    cmd = triton.docker_command(
        tmp_path, PORTS, name="n", gpus=True, shm_size="2g", models=["metrics_demo"], metrics_interval_ms=500
    )
    assert cmd[cmd.index("--gpus") + 1] == "all"
    assert "--shm-size=2g" in cmd
    assert "--metrics-interval-ms=500" in cmd
    assert cmd[-4:-2] == ["--model-control-mode=explicit", "--load-model=metrics_demo"]
    # every published port is loopback-only
    published = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-p"]
    assert all(p.startswith("127.0.0.1:") for p in published) and len(published) == 3


def test_local_flags_bind_loopback_everywhere():
    flags = triton.server_flags("/repo", PORTS)
    for name in ("http", "grpc", "metrics"):
        assert f"--{name}-address=127.0.0.1" in flags
    assert "--metrics-port=18002" in flags


def test_metrics_off_flag():
    flags = triton.server_flags("/repo", PORTS, metrics=False)
    assert "--allow-metrics=false" in flags
    assert not any(f.startswith("--metrics-port") for f in flags)


def test_auto_mode_names_both_ways_when_neither_works(monkeypatch, tmp_path):
    monkeypatch.setattr(triton, "local_support", lambda: (False, "no wheel here"))
    monkeypatch.setattr(triton, "docker_available", lambda: (False, "no engine here"))
    with pytest.raises(triton.TritonStartError) as err:
        triton.start(tmp_path)
    message = str(err.value)
    assert "no wheel here" in message and "no engine here" in message
    assert "nvidia-pytriton==0.7.0" in message and "docker pull" in message


def test_docker_mode_without_engine_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(triton, "docker_available", lambda: (False, "the Docker engine is not running"))
    with pytest.raises(triton.TritonStartError, match="(?s)Docker engine is not running.*docs.docker.com"):
        triton.start(tmp_path, mode="docker")


def test_bad_mode_and_missing_repository(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        triton.start(tmp_path, mode="kubernetes")
    with pytest.raises(triton.TritonStartError, match="does not exist"):
        triton.start(tmp_path / "nope")


def test_stub_environment_puts_this_interpreter_first_on_path(tmp_path):
    env = triton.stub_environment(tmp_path, base={"PATH": "/usr/bin", "PYTHONPATH": "/mine"})
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["PATH"].endswith("/usr/bin")
    assert env["PYTHONPATH"] == "/mine"  # left alone: the stub ignores it anyway
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(tmp_path)


def test_prepare_local_install_lays_out_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    install = triton.prepare_local_install()
    python_dir = install.backend_dir / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"):
        assert (python_dir / name).is_file()
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    assert install.binary.is_file() and install.libs_dir.is_dir()
    assert triton.prepare_local_install() == install  # reused, not rebuilt


LOG = "\n".join(
    [
        r'I1126 07:59:35.955906 2777 pb_stub.cc:366] "Failed to initialize Python stub: NameError"',
        r'E1126 07:59:34.596248 2777 server.cc:241] "CudaDriverHelper has not been initialized."',
        r"E1126 07:59:36.222290 2777 model_lifecycle.cc:642] \"failed to load 'bad' version 1: "
        r"Internal: NameError: name 'x' is not defined\n\nAt:\n  /r/bad/1/model.py(5): initialize\n\"",
        "error: creating server: Internal - failed to load all models",
    ]
)


def test_start_error_from_log_puts_the_traceback_first():
    err = triton.start_error_from_log("Triton exited with code 1", LOG, exit_code=1)
    lines = str(err).splitlines()
    assert lines[0] == "Triton exited with code 1."
    assert "Model 'bad' (version 1) failed to load:" in str(err)
    assert "    /r/bad/1/model.py(5): initialize" in lines  # real newlines, not \n escapes
    assert "failed to load all models" in err.reason
    assert "CudaDriverHelper" not in err.reason  # CPU-machine noise is not an error
    # the same parts as fields, for callers that need one of them
    assert err.headline == "Triton exited with code 1" and err.exit_code == 1 and not err.killed_by_signal
    assert list(err.model_errors) == ["'bad' (version 1)"]
    assert err.model_errors["'bad' (version 1)"].startswith("Internal: NameError: name 'x' is not defined")
    assert err.other_errors == ["error: creating server: Internal - failed to load all models"]
    assert "Last lines" not in err.reason and err.log_tail[-1] == err.other_errors[0]
    assert triton.start_error_from_log("Triton exited with code -6", "", exit_code=-6).killed_by_signal


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--http-address=127.0.0.1", "--allow-metrics=true", "--metrics-port=9"], "http://127.0.0.1:9/metrics"),
        (  # the last flag wins, and an explicit address beats the HTTP one
            ["--http-address=127.0.0.1", "--allow-metrics=false", "--allow-metrics=true", "--metrics-port=9",
             "--metrics-address=127.0.0.2"],
            "http://127.0.0.2:9/metrics",
        ),
        (["--http-address=127.0.0.1", "--allow-metrics=true", "--metrics-port=9", "--allow-metrics=false"], None),
        (["--metrics-port=9", "--metrics-address=0.0.0.0"], "http://127.0.0.1:9/metrics"),
    ],
)  # fmt: skip
def test_readiness_waits_for_metrics_where_the_flags_point(flags, expected):
    server = triton.TritonServer.__new__(triton.TritonServer)  # no process: only the flags are read
    server.command, server.container, server.ports = ["tritonserver", *flags], "", PORTS
    assert server.ready_urls() == [f"{server.http_url}/v2/health/ready", *([expected] if expected else [])]


def test_metrics_flags_replace_labkits_own():
    flags = triton.server_flags("/repo", PORTS, metrics_flags=["--metrics-port=9", "--metrics-address=127.0.0.2"])
    assert flags.count("--metrics-address=127.0.0.2") == 1 and "--metrics-address=127.0.0.1" not in flags
    assert "--metrics-port=9" in flags and "--metrics-port=18002" not in flags
    assert "--allow-metrics=false" not in flags


def test_python_env_goes_first_on_the_stubs_path(tmp_path):
    env = triton.stub_environment(base={"PATH": "/usr/bin"}, python_env=tmp_path)
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
