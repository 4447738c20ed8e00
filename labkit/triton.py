"""Start and stop a real Triton Inference Server, as a local process or in Docker.

``start(model_repository)`` returns a :class:`TritonServer` handle, usable as a
context manager, with ``http_url``, ``grpc_url``, ``metrics_url``, the server's
log and ``stop()``.

How it keeps a classroom out of trouble:

- free ports are picked and every listener binds 127.0.0.1, so two runs at once
  never collide and nothing is exposed to the network;
- readiness is awaited with a timeout, and a failed start raises
  :class:`TritonStartError` quoting the end of Triton's log (a broken
  ``model.py``'s traceback is in there);
- the server is stopped by ``stop()``, at interpreter exit, and, through a tiny
  watchdog process, even when the Python that started it is killed (SIGKILL
  included): no orphaned ``tritonserver``.

Local mode runs the real ``tritonserver`` 2.51.0 binary shipped in the
``nvidia-pytriton==0.7.0`` wheel; the model's Python processes (the backend
stubs) find this interpreter's packages (labkit puts its ``bin`` first on
``PATH``, which is what the stub goes by), so they see the same numpy and
packages as the notebook kernel whether or not the venv is activated.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from labkit import TRITON_IMAGE, TRITON_VERSION
from labkit.process import ManagedProcess, free_port, free_ports  # noqa: F401 (re-exported)

MODES = ("auto", "local", "docker")
LOCAL_HINT = (
    "local: `pip install -r requirements.txt` (it brings nvidia-pytriton==0.7.0, which ships "
    "tritonserver 2.51.0) on Linux x86-64 with glibc >= 2.35"
)
DOCKER_HINT = (
    "docker: install and start a Docker engine (https://docs.docker.com/engine/install/), "
    f"then `docker pull {TRITON_IMAGE}` (or the image you name in $TRITON_IMAGE)"
)


#: How ``stop()`` ends a server. By default with SIGKILL at once: a clean unload (SIGTERM) takes about 1 s per
#: model instance plus Triton's 1 s shutdown tick, and nothing can read a server that is going away.
#: ``LABKIT_STOP=graceful`` (or ``stop(graceful=True)``) sends SIGTERM first, as a real deployment would.
#: What a server leaves in /dev/shm is removed either way.
STOP_ENV = "LABKIT_STOP"
SHM_FLAG = "shm-region-prefix-name="


class TritonStartError(RuntimeError):
    """Triton could not be started; the message quotes the end of its log."""


# --------------------------------------------------------------------------- ports


@dataclass(frozen=True)
class Ports:
    """The three ports a Triton server listens on."""

    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls) -> "Ports":
        """Three free ports on 127.0.0.1."""
        return cls(*free_ports(3))


# --------------------------------------------------------------------- local mode


@dataclass(frozen=True)
class LocalInstall:
    """Where the local ``tritonserver`` binary, its libraries and backends are."""

    binary: Path
    libs_dir: Path
    backend_dir: Path


def local_support() -> tuple[bool, str]:
    """Can this machine run the wheel's ``tritonserver``? Returns (ok, reason)."""
    if platform.system() != "Linux":
        return False, f"the local binary runs on Linux only (this is {platform.system()})"
    if platform.machine() not in ("x86_64", "aarch64"):
        return False, f"no local binary for {platform.machine()}"
    libc, version = platform.libc_ver()
    if libc == "glibc" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        if (major, minor) < (2, 35):
            return False, f"glibc {version} is older than the 2.35 the binary needs"
    try:
        root = _pytriton_root()
    except ImportError:
        return False, "the nvidia-pytriton wheel is not installed in this Python"
    if not (root / "tritonserver" / "bin" / "tritonserver").exists():
        return False, f"no tritonserver binary under {root}"
    if not _stub_source(root).exists():
        return False, f"the wheel has no Python backend stub for Python {_py_version()}"
    return True, "ok"


def _py_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _pytriton_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pytriton")
    return Path(list(spec.submodule_search_locations)[0])


def _stub_source(root: Path) -> Path:
    return root / "tritonserver" / "python_backend_stubs" / _py_version() / "triton_python_backend_stub"


def cache_dir() -> Path:
    """Where labkit keeps its prepared backend directory (``$LABKIT_CACHE`` overrides)."""
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labkit"


def prepare_local_install() -> LocalInstall:
    """Lay out a backend directory with the stub for this Python; reuse it next time.

    Triton finds the Python backend in ``<backend-directory>/python/``, which must
    hold ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
    ``triton_python_backend_stub`` built for the running Python version.
    """
    ok, reason = local_support()
    if not ok:
        raise TritonStartError(f"Cannot run Triton locally: {reason}.\nTo fix it: {LOCAL_HINT}")
    root = _pytriton_root()
    server_dir = root / "tritonserver"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    key = f"tritonserver-{TRITON_VERSION}-py{_py_version()}-{digest}"
    target = cache_dir() / key
    backends = target / "backends"
    if not (backends / "python" / "triton_python_backend_stub").exists():
        staging = Path(tempfile.mkdtemp(prefix=key + ".", dir=_mkdir(cache_dir())))
        py_dir = staging / "backends" / "python"
        py_dir.mkdir(parents=True)
        for item in (server_dir / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, py_dir / item.name)
        shutil.copy2(_stub_source(root), py_dir / "triton_python_backend_stub")
        try:
            os.replace(staging, target)  # atomic; loses harmlessly to a concurrent run
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return LocalInstall(
        binary=server_dir / "bin" / "tritonserver",
        libs_dir=root.parent / "nvidia_pytriton.libs",
        backend_dir=backends,
    )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def stub_environment(libs_dir: Path | None = None, base: dict | None = None) -> dict[str, str]:
    """Environment for ``tritonserver`` so its Python stubs use *this* interpreter's packages.

    The stub embeds Python and **ignores** ``PYTHONPATH``: it takes its prefix,
    and so its site-packages, from the first ``python3`` on ``PATH`` (checked on
    2.51.0: with ``PYTHONPATH`` naming another numpy, the stub still imported the
    one of the ``python3`` on ``PATH``). A venv that is not activated is therefore
    not seen (the model fails with "No module named 'numpy'") unless this
    interpreter's ``bin`` comes first on ``PATH``, which is what this does; its
    ``libpython`` directory and the wheel's libraries go on ``LD_LIBRARY_PATH``.
    """
    env = dict(os.environ if base is None else base)

    def add(name: str, parts: Iterable[str], first: bool = True) -> None:
        old = [p for p in env.get(name, "").split(os.pathsep) if p]
        env[name] = os.pathsep.join(dict.fromkeys([*parts, *old] if first else [*old, *parts]))

    libdirs = [str(libs_dir)] if libs_dir else []
    if sysconfig.get_config_var("LIBDIR"):
        libdirs.append(sysconfig.get_config_var("LIBDIR"))
    add("LD_LIBRARY_PATH", libdirs)
    add("PATH", [os.path.dirname(sys.executable)])
    return env


# ------------------------------------------------------------------- docker mode


def docker_image(image: str | None = None) -> str:
    """The Triton image Docker mode runs: ``image`` if given, else ``$TRITON_IMAGE``, else the pinned default.

    The pinned default (:data:`labkit.TRITON_IMAGE`, ``nvcr.io/nvidia/tritonserver:24.10-py3``) is the
    release of the local binary (2.51.0). ``TRITON_IMAGE`` is the same variable ``docker/run_triton.sh``
    and ``docker/compose.yaml`` read, so one setting moves all three to another release
    (what changed after 24.10: ``docs/versions.md``).
    """
    return image or os.environ.get("TRITON_IMAGE") or TRITON_IMAGE


def docker_available(timeout: float = 10.0) -> tuple[bool, str]:
    """Is a Docker engine answering? Returns (ok, reason)."""
    if shutil.which("docker") is None:
        return False, "the `docker` command is not installed"
    try:
        out = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, "the Docker engine did not answer `docker info` in time"
    if out.returncode != 0:
        first = (out.stderr or out.stdout).strip().splitlines()
        return False, "the Docker engine is not running" + (f" ({first[0]})" if first else "")
    return True, f"Docker engine {out.stdout.strip()}"


def server_flags(
    model_repository: str,
    ports: Ports,
    *,
    address: str | None = "127.0.0.1",
    models: Sequence[str] | None = None,
    metrics: bool = True,
    metrics_interval_ms: int | None = None,
    log_verbose: int = 0,
    exit_timeout_s: int = 3,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``tritonserver`` flags the course uses (shared by local and Docker modes)."""
    flags = [f"--model-repository={model_repository}"]
    if address:
        flags += [f"--http-address={address}", f"--grpc-address={address}"]
        if metrics:
            flags.append(f"--metrics-address={address}")
    flags += [f"--http-port={ports.http}", f"--grpc-port={ports.grpc}"]
    if metrics:
        flags += ["--allow-metrics=true", f"--metrics-port={ports.metrics}"]
        if metrics_interval_ms is not None:
            flags.append(f"--metrics-interval-ms={metrics_interval_ms}")
    else:
        flags.append("--allow-metrics=false")
    if models is not None:
        flags.append("--model-control-mode=explicit")
        flags += [f"--load-model={m}" for m in models]
    flags += [f"--exit-timeout-secs={exit_timeout_s}", f"--log-verbose={log_verbose}"]
    return flags + list(extra_args)


def docker_command(
    model_repository: str | os.PathLike,
    ports: Ports,
    *,
    name: str,
    image: str | None = None,
    gpus: bool = False,
    shm_size: str = "1g",
    **flags,
) -> list[str]:
    """The exact ``docker run`` command for Triton in a container.

    Ports are published on 127.0.0.1 only; the model repository is mounted
    read-only at ``/models`` (and a ``dropin/`` folder beside it at ``/dropin``,
    where ``metrics_helper_demo`` finds the drop-in helper); ``--rm`` removes the container when it stops.
    Inside the container Triton listens on its default ports on all of the
    container's interfaces (that is what Docker forwards to). ``image``: see
    :func:`docker_image` (default ``$TRITON_IMAGE``, else the pinned 24.10 image).
    """
    repo = Path(model_repository).resolve()
    cmd = ["docker", "run", "--rm", "--name", name]
    if gpus:
        cmd += ["--gpus", "all"]
    cmd += [
        f"--shm-size={shm_size}",
        "-p", f"127.0.0.1:{ports.http}:8000",
        "-p", f"127.0.0.1:{ports.grpc}:8001",
        "-p", f"127.0.0.1:{ports.metrics}:8002",
        "-v", f"{repo}:/models:ro",
    ]  # fmt: skip
    if (repo.parent / "dropin").is_dir():  # the drop-in helper beside the repository (metrics_helper_demo)
        cmd += ["-v", f"{repo.parent / 'dropin'}:/dropin:ro"]
    cmd += [docker_image(image), "tritonserver"]
    inside = Ports(8000, 8001, 8002)
    return cmd + server_flags("/models", inside, address=None, **flags)


# --------------------------------------------------------------------- the handle


class TritonServer:
    """A running Triton server: its URLs, its log, and ``stop()``.

    Use it as a context manager so the server stops when the block ends::

        with labkit.triton.start("model_repository") as server:
            print(server.metrics_url)
    """

    def __init__(
        self,
        command: list[str],
        env: dict[str, str] | None,
        ports: Ports,
        mode: str,
        container: str = "",
        metrics: bool = True,
    ) -> None:
        if not container and not any(SHM_FLAG in arg for arg in command):
            # the model stubs' shared memory gets a name of its own, so stop() can remove what a killed
            # or crashed server leaves in /dev/shm (Triton removes it only when it exits cleanly)
            command = [command[0], f"--backend-config=python,{SHM_FLAG}labkit_{uuid.uuid4().hex[:12]}_", *command[1:]]
        self.command = command
        self.ports = ports
        self.mode = mode
        self.container = container
        self.metrics_enabled = metrics
        prefix = next((arg.split(SHM_FLAG, 1)[1] for arg in command if SHM_FLAG in arg), "")
        leftovers = [f"/dev/shm/{prefix}*"] if prefix and not container else []
        self.process = ManagedProcess(command, env, name="tritonserver", container=container, leftovers=leftovers)

    # URLs ------------------------------------------------------------------
    host = "127.0.0.1"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP/REST endpoint, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what ``tritonclient.grpc`` takes)."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int:
        """Process id of ``tritonserver`` (or of the ``docker run`` client)."""
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """The file Triton's output goes to while it runs."""
        return self.process.log_path

    # state -----------------------------------------------------------------
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process.is_running()

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True when ``/v2/health/ready`` answers 200."""
        try:
            return requests.get(f"{self.http_url}/v2/health/ready", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        """Everything Triton has printed so far (kept after stop)."""
        return self.process.log()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        return self.process.log_tail(lines)

    def wait_ready(self, timeout: float) -> None:
        """Block until the server (and its metrics endpoint) answer, or raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise TritonStartError(self._failure(f"Triton exited with code {self.process.returncode}"))
            if self.is_ready(timeout=1.0) and self._metrics_up():
                return
            time.sleep(0.2)
        raise TritonStartError(self._failure(f"Triton was not ready after {timeout:.0f} s"))

    def _metrics_probe_url(self) -> str | None:
        """Where Triton will serve /metrics, read from its flags as Triton reads them (the last one wins;
        the metrics address defaults to the HTTP address); None when metrics are off."""
        if self.container:
            return self.metrics_url if self.metrics_enabled else None
        flags = dict(arg[2:].split("=", 1) for arg in self.command[1:] if arg.startswith("--") and "=" in arg)
        if flags.get("allow-metrics", "true") != "true" or "metrics-port" not in flags:
            return None
        address = flags.get("metrics-address") or flags.get("http-address") or self.host
        return f"http://{self.host if address == '0.0.0.0' else address}:{flags['metrics-port']}/metrics"

    def _metrics_up(self) -> bool:
        url = self._metrics_probe_url()
        if url is None:
            return True
        try:
            return requests.get(url, timeout=1.0).status_code == 200
        except requests.RequestException:
            return False

    def _failure(self, headline: str) -> str:
        self.stop()
        return explain_failure(headline, self.log(), self.command)

    # stopping ----------------------------------------------------------------
    def stop(self, timeout: float = 15.0, graceful: bool | None = None) -> None:
        """Stop the server and every process it started (the model stubs), and remove their shared memory.

        ``graceful``: SIGTERM and up to ``timeout`` s for Triton to unload its models (running each
        ``finalize``); default ``False`` (SIGKILL at once) unless ``LABKIT_STOP=graceful``. Safe to call twice.
        """
        if graceful is None:
            graceful = os.environ.get(STOP_ENV, "kill") == "graceful"
        self.process.stop(timeout, graceful=graceful)

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return (
            f"<TritonServer {self.mode} {state} http={self.http_url} grpc={self.grpc_url} metrics={self.metrics_url}>"
        )


_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version (\d+): (.*?)\"?$")
_ERROR_LINE = re.compile(r"^E\d{4} |^error:|Address already in use|failed to bind", re.IGNORECASE)
# Messages a CPU-only machine always prints; they are not why a start failed.
_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "failed to load 'tritonserver'", "cuda")


def explain_failure(headline: str, log: str, command: Sequence[str] = ()) -> str:
    """A readable failure message: each model that failed to load with its
    traceback, Triton's other error lines, then the tail of its log."""
    lines = log.splitlines()
    parts = [headline + "."]
    seen: set[str] = set()
    for line in lines:
        match = _LOAD_FAILURE.search(line)
        if match and match.group(1) not in seen:
            seen.add(match.group(1))
            detail = match.group(3).replace("\\n", "\n").strip()
            parts += ["", f"Model '{match.group(1)}' (version {match.group(2)}) failed to load:"]
            parts += ["  " + d for d in detail.splitlines()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not any(n in ln for n in _NOISE)]
    errors = [e for e in dict.fromkeys(errors) if not _LOAD_FAILURE.search(e)]
    if errors:
        parts += ["", "Other errors in Triton's log:", *("  " + e for e in errors[-10:])]
    # the option and model tables are wide and say little about a failure: leave them out
    tail = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(("|", "+-"))]
    parts += ["", "Last lines of Triton's log:", *("  " + ln for ln in tail[-(8 if seen else 20) :])]
    if command:
        parts += ["", "Command: " + " ".join(command)]
    return "\n".join(parts)


# ----------------------------------------------------------------------- start()


def start(
    model_repository: str | os.PathLike,
    mode: str = "auto",
    *,
    models: Sequence[str] | None = None,
    ports: Ports | None = None,
    timeout: float | None = None,
    metrics: bool = True,
    metrics_interval_ms: int | None = None,
    log_verbose: int = 0,
    gpus: bool = False,
    image: str | None = None,
    extra_args: Sequence[str] = (),
) -> TritonServer:
    """Start Triton on ``model_repository`` and wait until it is ready.

    Args:
        model_repository: folder with one sub-folder per model.
        mode: ``"local"`` (the wheel's binary), ``"docker"`` (a container image)
            or ``"auto"`` (local where supported, else Docker if an engine answers).
        models: load only these models (explicit model control); default: all.
        ports: fixed ports; default: three free ports on 127.0.0.1.
        timeout: seconds to wait for readiness (default 90 local, 900 Docker,
            which may pull the image first).
        metrics: serve ``/metrics`` (``--allow-metrics``).
        metrics_interval_ms: how often Triton refreshes its own gauges.
        gpus: Docker mode: pass ``--gpus all``.
        image: Docker mode: the image; default ``$TRITON_IMAGE`` if set, else the pinned
            ``nvcr.io/nvidia/tritonserver:24.10-py3`` (:func:`docker_image`).
        extra_args: more ``tritonserver`` flags.

    Raises:
        TritonStartError: with the end of Triton's log when it cannot start.
    """
    repo = Path(model_repository).resolve()
    if not repo.is_dir():
        raise TritonStartError(f"Model repository {repo} does not exist")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "auto":
        mode = _choose_mode()
    flags = dict(models=models, metrics=metrics, metrics_interval_ms=metrics_interval_ms, log_verbose=log_verbose)
    attempts = 1 if ports is not None else 3
    for attempt in range(attempts):
        chosen = ports or Ports.pick()
        if mode == "local":
            install = prepare_local_install()
            command = [str(install.binary), *server_flags(str(repo), chosen, **flags, extra_args=extra_args)]
            command.insert(2, f"--backend-directory={install.backend_dir}")
            server = TritonServer(command, stub_environment(install.libs_dir), chosen, "local", metrics=metrics)
            wait = timeout or 90.0
        else:
            ok, reason = docker_available()
            if not ok:
                raise TritonStartError(
                    f"Cannot run Triton in Docker ({docker_image(image)}): {reason}.\nTo fix it: {DOCKER_HINT}"
                )
            name = f"labkit-triton-{uuid.uuid4().hex[:8]}"
            command = docker_command(
                repo, chosen, name=name, image=docker_image(image), gpus=gpus, **flags, extra_args=extra_args
            )
            server = TritonServer(command, None, chosen, "docker", container=name, metrics=metrics)
            wait = timeout or 900.0
        try:
            server.wait_ready(wait)
            return server
        except TritonStartError as err:
            in_use = "already in use" in str(err).lower() or "failed to bind" in str(err).lower()
            if in_use and attempt + 1 < attempts:
                continue  # another process took a port between picking and binding
            raise
    raise AssertionError("unreachable")


def _choose_mode() -> str:
    ok, local_reason = local_support()
    if ok:
        return "local"
    ok, docker_reason = docker_available()
    if ok:
        return "docker"
    raise TritonStartError(
        "No way to start Triton on this machine.\n"
        f"- local process: {local_reason}. To fix it: {LOCAL_HINT}\n"
        f"- Docker: {docker_reason}. To fix it: {DOCKER_HINT}"
    )
