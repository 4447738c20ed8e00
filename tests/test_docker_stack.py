"""docker/compose.yaml and its GPU override, read with PyYAML (no Docker engine needed).

Pinned images (Triton's through ``${TRITON_IMAGE:-<pinned>}``, the variable docker/run_triton.sh and
labkit.triton read too), loopback-only ports, no default password (checked when Grafana starts, so that
`ps`, `logs` and `down` need none), health checks, every mounted path present, and the files it mounts are
the ones promtool and the lint tests check. When a Compose CLI is installed (`docker compose` or Debian's
`docker-compose`), `config` validates the files too (it needs no engine), and `ps`, `logs` and `down` get
past reading the files without the password.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from labkit import TRITON_IMAGE
from labkit import prometheus as lp
from tests import monitoring_files as mf
from tests.conftest import IN_CI, require_tool

COMPOSE = mf.load_yaml(mf.COMPOSE)
GPU = mf.load_yaml(mf.COMPOSE_GPU)
SERVICES = COMPOSE["services"]


def command_flags(service: dict) -> dict[str, str]:
    """``--flag=value`` items of a service's command, as a dict."""
    return dict(arg.lstrip("-").split("=", 1) for arg in service.get("command", []) if "=" in arg)


def bind_mounts(service: dict) -> list[tuple[Path, str, str]]:
    """``(host path, container path, mode)`` of a service's bind mounts (named volumes left out)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith((".", "/")):
            mounts.append(((mf.DOCKER / source).resolve(), target, mode[0] if mode else "rw"))
    return mounts


def mount_source(service: dict, container_path: str) -> Path:
    """The host path mounted at ``container_path`` (or at a parent folder of it)."""
    for source, target, _ in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / os.path.relpath(container_path, target)
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_three_services():
    assert set(SERVICES) == {"triton", "prometheus", "grafana"}


def test_images_are_pinned():
    # Triton: the pinned release by default, another one through TRITON_IMAGE (docs/versions.md)
    assert SERVICES["triton"]["build"]["args"]["TRITON_IMAGE"] == f"${{TRITON_IMAGE:-{TRITON_IMAGE}}}"
    assert SERVICES["triton"]["image"] == "triton-metrics-triton:local"  # the tag docker/run_triton.sh builds too
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", TRITON_IMAGE), "pin an exact release"
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", SERVICES["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", SERVICES["grafana"]["image"])


def test_prometheus_image_is_pinned_and_its_files_pass_the_local_promtool():
    """What the image runs is pinned (an exact release, never `latest`), and the config and rules it mounts
    pass the promtool installed here, whatever its release (Debian, Ubuntu and brew ship different ones)."""
    image = SERVICES["prometheus"]["image"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", image), f"{image}: pin an exact release"
    promtool = require_tool("promtool", lp.INSTALL_HINT)
    prometheus = SERVICES["prometheus"]
    config = mount_source(prometheus, command_flags(prometheus)["config.file"])
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(mf.RULE_FILES)} rule files found" in checked.stdout + checked.stderr
    rules = subprocess.run([promtool, "check", "rules", *map(str, mf.RULE_FILES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ports_only_on_loopback(name):
    for port in SERVICES[name].get("ports", []):
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port} is open to the network"


def test_grafana_password_from_the_environment_without_default():
    """Empty when unset (no `:?`: Compose would refuse `ps`, `logs` and `down` in a shell without it), never a
    default password; the entrypoint refuses an empty one (next test)."""
    env = SERVICES["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    text = mf.COMPOSE.read_text()
    assert "GRAFANA_ADMIN_PASSWORD:?" not in text and "GRAFANA_ADMIN_PASSWORD?" not in text
    assert not re.search(r"GRAFANA_ADMIN_PASSWORD:?-[^}]", text), "no default password"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"


def grafana_entrypoint(tmp_path: Path, password: str | None) -> subprocess.CompletedProcess:
    """Grafana's entrypoint from compose.yaml, run by sh with the image's /run.sh replaced by a stub."""
    entrypoint = SERVICES["grafana"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and len(entrypoint) == 4
    script = entrypoint[2].replace("$$", "$")  # Compose's escape for a literal $
    assert 'exec /run.sh "$@"' in script  # the image's own entrypoint (grafana/grafana Dockerfile: ENTRYPOINT /run.sh)
    stub = tmp_path / "run.sh"
    stub.write_text('#!/bin/sh\necho "grafana started with $# arguments"\n')
    stub.chmod(0o755)
    env = {"PATH": os.environ["PATH"]}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    command = ["sh", "-c", script.replace("/run.sh", str(stub)), entrypoint[3]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("password", [None, ""])
def test_grafana_refuses_to_start_without_a_password(tmp_path, password):
    out = grafana_entrypoint(tmp_path, password)
    assert out.returncode == 1 and "GRAFANA_ADMIN_PASSWORD is not set" in out.stderr
    assert "grafana started" not in out.stdout


def test_grafana_starts_with_a_password(tmp_path):
    out = grafana_entrypoint(tmp_path, "s3cret")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "grafana started with 0 arguments"


HEALTH = {  # service: (tool in its image, path, port inside the container)
    "triton": ("curl", "/v2/health/ready", "8000"),  # server build.py (v2.51.0) installs curl in the image
    "prometheus": ("wget", "/-/ready", "9090"),  # a busybox image: wget, no curl
    "grafana": ("curl", "/api/health", "3000"),  # the Dockerfile installs curl (apk add ... curl)
}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name):
    check = SERVICES[name]["healthcheck"]
    tool, path, port = HEALTH[name]
    assert check["test"][0] == "CMD" and check["test"][1] == tool
    assert check["test"][-1] == f"http://localhost:{port}{path}"
    published = {p.rsplit(":", 1)[1] for p in SERVICES[name]["ports"]}
    assert port in published, f"{name}: {port} is not the port the service listens on"
    assert {"interval", "timeout", "retries"} <= check.keys()
    if name == "triton":
        assert "start_period" in check, "model loading must not count as failures"


COMPOSE_LINE = re.compile(r"docker[ -]compose\b[^\n`\"]*-f docker/compose\.yaml[^\n`\"]*")


def compose_command_lines() -> list[tuple[str, str]]:
    """Every documented Compose command line (`docker compose ... -f docker/compose.yaml ...`) and its file."""
    root = mf.DOCKER.parent
    files = [mf.COMPOSE, mf.COMPOSE_GPU, root / "README.md", root / "deploy" / "kubernetes" / "README.md"]
    files += sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "labkit").glob("*.py"))
    files += sorted((root / "docs").glob("*.md"))
    return [(path.name, m.group(0)) for path in files for m in COMPOSE_LINE.finditer(path.read_text())]


def test_every_documented_compose_command_names_the_project():
    """`up` with -p triton-metrics and a `down` without it act on two different projects."""
    lines = compose_command_lines()
    assert len(lines) >= 5
    missing = [f"{name}: {line}" for name, line in lines if "-p triton-metrics" not in line]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_path_exists(name):
    for source, target, mode in bind_mounts(SERVICES[name]):
        assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        assert mode == "ro", f"{name}: {target} should be read-only"


def test_triton_serves_the_repository_model_repository():
    triton = SERVICES["triton"]
    flags = command_flags(triton)
    assert mount_source(triton, flags["model-repository"]) == (mf.DOCKER.parent / "model_repository").resolve()
    assert flags["allow-metrics"] == "true"
    published = {p.split(":")[-1] for p in triton["ports"]}
    assert {"8000", "8001", flags.get("metrics-port", "8002")} <= published


def test_prometheus_mounts_the_config_promtool_checks():
    prometheus = SERVICES["prometheus"]
    flags = command_flags(prometheus)
    config_path = flags["config.file"]
    assert mount_source(prometheus, config_path) == mf.PROMETHEUS_CONFIG.resolve()
    # rule_files are relative to the config's folder, in the container as here
    config = mf.load_yaml(mf.PROMETHEUS_CONFIG)
    container_dir = os.path.dirname(config_path)
    for pattern in config["rule_files"]:
        in_container = os.path.normpath(os.path.join(container_dir, pattern))
        host_pattern = mount_source(prometheus, os.path.dirname(in_container)) / os.path.basename(in_container)
        found = sorted(host_pattern.parent.glob(host_pattern.name))
        assert found == mf.RULE_FILES, f"{pattern} must load exactly the rule files the tests check"
    assert flags["storage.tsdb.path"] in {v.split(":")[1] for v in prometheus["volumes"]}


def test_prometheus_scrapes_the_triton_service():
    config = mf.load_yaml(mf.PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "triton" in jobs, "the rules and dashboards select job=triton"
    targets = [t for sc in jobs["triton"]["static_configs"] for t in sc["targets"]]
    metrics_port = command_flags(SERVICES["triton"]).get("metrics-port", "8002")
    assert targets == [f"triton:{metrics_port}"]


def test_grafana_provisioning_matches_the_mounts():
    grafana = SERVICES["grafana"]
    assert mount_source(grafana, "/etc/grafana/provisioning") == (mf.GRAFANA / "provisioning").resolve()
    for path in mf.DASHBOARD_PROVIDERS:
        for provider in mf.load_yaml(path)["providers"]:
            folder = mount_source(grafana, provider["options"]["path"])
            assert sorted(folder.glob("*.json")) == mf.DASHBOARDS
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mount_source(grafana, home).exists()
    for path in mf.DATASOURCES:
        for source in mf.load_yaml(path)["datasources"]:
            host = re.match(r"https?://([^:/]+)", source["url"]).group(1)
            assert host in SERVICES, f"the datasource points at {host}, not a service of the stack"


def test_gpu_override_reserves_nvidia_gpus_for_triton_only():
    assert set(GPU["services"]) == {"triton"}
    devices = GPU["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def run_triton_dry_run(**env: str) -> str:
    """The `docker run` command docker/run_triton.sh would run (DRY_RUN=1 prints it; no Docker needed)."""
    script = mf.DOCKER / "run_triton.sh"
    base = {k: v for k, v in os.environ.items() if k != "TRITON_IMAGE"}
    out = subprocess.run(
        ["bash", str(script)], env={**base, "DRY_RUN": "1", **env}, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_run_triton_script_pins_the_image_and_honours_triton_image():
    build, run = (line.split() for line in run_triton_dry_run().splitlines())
    assert build[:2] == ["docker", "build"] and f"TRITON_IMAGE={TRITON_IMAGE}" in build
    assert run[run.index("tritonserver") - 1] == build[build.index("-t") + 1]  # runs what it built
    chosen, _ = run_triton_dry_run(TRITON_IMAGE="nvcr.io/nvidia/tritonserver:26.07-py3").splitlines()
    assert "TRITON_IMAGE=nvcr.io/nvidia/tritonserver:26.07-py3" in chosen.split()
    default = run
    published = [default[i + 1] for i, arg in enumerate(default) if arg == "-p"]
    assert "--rm" in default and len(published) == 3 and all(p.startswith("127.0.0.1:") for p in published)


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1, Debian's package), whichever runs."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def require_compose_cli() -> list[str]:
    cli = compose_cli()
    if cli is None:
        message = (
            "no Compose CLI here (Docker is optional for this course); to run this check: "
            "`sudo apt-get install docker-compose` or Docker's compose plugin"
        )
        if IN_CI:
            pytest.fail(message + " (.ci/run installs it)")
        pytest.skip(message)
    return cli


@pytest.mark.parametrize("command", [["ps"], ["logs"], ["down"]])
def test_compose_commands_need_no_password(tmp_path, command):
    """In a fresh shell (no GRAFANA_ADMIN_PASSWORD) `ps`, `logs` and `down` read the files and go on to the engine.
    DOCKER_HOST points at a socket that does not exist, so they stop there, never touching a real engine."""
    cli = require_compose_cli()
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_ADMIN_PASSWORD", "TRITON_IMAGE")}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    files = ["-p", f"triton-metrics-test-{os.getpid()}", "-f", str(mf.COMPOSE)]
    out = subprocess.run([*cli, *files, *command], capture_output=True, text=True, env=env, timeout=60)
    said = out.stdout + out.stderr
    assert "GRAFANA_ADMIN_PASSWORD" not in said and "required variable" not in said.lower(), said
    assert out.returncode == 0 or re.search(r"no-engine\.sock|daemon|connect", said, flags=re.IGNORECASE), said


def test_compose_cli_config():
    """`compose config` (no engine needed): valid without the password (as `ps`, `down` read it) and with it."""
    cli = require_compose_cli()
    files = ["-f", str(mf.COMPOSE), "-f", str(mf.COMPOSE_GPU)]
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_ADMIN_PASSWORD", "TRITON_IMAGE")}
    unset = subprocess.run([*cli, *files, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert unset.returncode == 0, unset.stderr
    assert yaml.safe_load(unset.stdout)["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""
    env["GRAFANA_ADMIN_PASSWORD"] = "only-for-this-test"
    ok = subprocess.run([*cli, *files, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)["services"]
    assert resolved["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "only-for-this-test"
    for name, service in resolved.items():
        for port in service.get("ports", []):  # v1 prints "ip:host:container", v2 a mapping
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"
    assert resolved["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert resolved["triton"]["ulimits"] == {"memlock": {"soft": -1, "hard": -1}, "stack": 67108864}
    assert {name for name, service in resolved.items() if "healthcheck" in service} == set(SERVICES)
    # the pinned default when TRITON_IMAGE is not set
    assert resolved["triton"]["build"]["args"]["TRITON_IMAGE"] == TRITON_IMAGE
    env["TRITON_IMAGE"] = "nvcr.io/nvidia/tritonserver:26.07-py3"
    chosen = subprocess.run([*cli, *files, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert chosen.returncode == 0, chosen.stderr
    args = yaml.safe_load(chosen.stdout)["services"]["triton"]["build"]["args"]
    assert args["TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:26.07-py3"


def test_the_triton_image_installs_what_the_models_import():
    """docker/triton.Dockerfile installs the models' packages beyond numpy at requirements.txt's pins for the
    image's Python (3.10 in 24.10), numpy < 2: without onnxruntime digits_classifier fails to load and Triton,
    loading the whole repository, exits at startup (run here with a Python that lacks it)."""
    from packaging.requirements import Requirement

    dockerfile = (mf.DOCKER / "triton.Dockerfile").read_text()
    assert re.search(r"(?m)^ARG TRITON_IMAGE=(\S+)$", dockerfile).group(1) == TRITON_IMAGE
    installed = re.findall(r'"([^"]+)"', re.search(r"(?m)^RUN pip install .*$", dockerfile).group(0))
    pins = {}
    for line in (mf.DOCKER.parent / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"python_version": "3.10"}):
                pins[requirement.name] = str(requirement.specifier)
    assert installed == [f"onnxruntime{pins['onnxruntime']}", "numpy<2"]
    models = (mf.DOCKER.parent / "model_repository").glob("*/1/model.py")
    imports = {
        m for path in models for m in re.findall(r"(?m)^\s*import (onnxruntime|sklearn|scipy)", path.read_text())
    }
    assert imports == {"onnxruntime"}, "a model imports a package the image does not install"
