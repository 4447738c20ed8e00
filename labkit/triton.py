"""Start and stop a real Triton Inference Server, as a local process or in Docker.

``start(model_repository)`` returns a :class:`TritonServer` (a :class:`labkit.process.ManagedServer`):
``http_url``, ``grpc_url``, ``metrics_url``, the log, ``stop()``, a context manager. Every listener
binds 127.0.0.1 on free ports; a failed start raises :class:`TritonStartError` with the reason from
Triton's log; the server never outlives the Python that started it.

Local mode runs the ``tritonserver`` 2.51.0 binary of the ``nvidia-pytriton==0.7.0`` wheel, with
this interpreter's ``bin`` first on ``PATH`` so the model stubs import its packages
(:func:`stub_environment`).
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
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit import TRITON_IMAGE, TRITON_VERSION
from labkit.process import ManagedServer, free_ports, start_with_port_retry

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


@dataclass
class TritonStartError(RuntimeError):
    """Triton could not be started. The message quotes the reason; the parts are fields too.

    ``headline``: what happened (e.g. "Triton exited with code 1"); ``exit_code``: the server's exit code
    (negative: killed by that signal; None: still running or never started); ``model_errors``: each model
    that failed to load and Triton's error for it (the traceback of a broken ``model.py``); ``other_errors``:
    Triton's other error lines; ``log_tail``: the last lines of its log; ``command``: how it was started.
    """

    headline: str
    exit_code: int | None = None
    model_errors: dict[str, str] = field(default_factory=dict)
    other_errors: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text()

    @property
    def reason(self) -> str:
        """The headline, each model's load error and Triton's other error lines (no log tail)."""
        parts = [self.headline + "."]
        for model, detail in self.model_errors.items():
            parts += ["", f"Model {model} failed to load:", *("  " + d for d in detail.splitlines())]
        if self.other_errors:
            parts += ["", "Other errors in Triton's log:", *("  " + e for e in self.other_errors)]
        return "\n".join(parts)

    @property
    def killed_by_signal(self) -> bool:
        """True when the server died of a signal (an abort, a crash) rather than exiting."""
        return self.exit_code is not None and self.exit_code < 0

    def text(self) -> str:
        """The whole message: :attr:`reason`, the log tail and the command."""
        parts = [self.reason]
        if self.log_tail:
            parts += ["", "Last lines of Triton's log:", *("  " + ln for ln in self.log_tail)]
        if self.command:
            parts += ["", "Command: " + " ".join(self.command)]
        return "\n".join(parts)


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
        cache_dir().mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=key + ".", dir=cache_dir()))
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


def stub_environment(
    libs_dir: Path | None = None, base: dict | None = None, python_env: str | os.PathLike | None = None
) -> dict[str, str]:
    """Environment for ``tritonserver`` so its Python stubs use *this* interpreter's packages.

    The stub embeds Python and **ignores** ``PYTHONPATH``: it takes its prefix,
    and so its site-packages, from the first ``python3`` on ``PATH`` (checked on
    2.51.0: with ``PYTHONPATH`` naming another numpy, the stub still imported the
    one of the ``python3`` on ``PATH``). A venv that is not activated is therefore
    not seen (the model fails with "No module named 'numpy'") unless this
    interpreter's ``bin`` comes first on ``PATH``, which is what this does; its
    ``libpython`` directory and the wheel's libraries go on ``LD_LIBRARY_PATH``.
    ``python_env``: another environment's ``bin`` goes first instead (its packages are what the stubs see).
    """
    env = dict(os.environ if base is None else base)

    def add(name: str, parts: Iterable[str], first: bool = True) -> None:
        old = [p for p in env.get(name, "").split(os.pathsep) if p]
        env[name] = os.pathsep.join(dict.fromkeys([*parts, *old] if first else [*old, *parts]))

    libdirs = [str(libs_dir)] if libs_dir else []
    if sysconfig.get_config_var("LIBDIR"):
        libdirs.append(sysconfig.get_config_var("LIBDIR"))
    add("LD_LIBRARY_PATH", libdirs)
    add("PATH", [str(Path(python_env) / "bin")] if python_env else [os.path.dirname(sys.executable)])
    return env


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
    metrics_flags: Sequence[str] | None = None,
    log_verbose: int = 0,
    exit_timeout_s: int = 3,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``tritonserver`` flags the course uses (shared by local and Docker modes).

    ``metrics_flags``: the caller's own metrics flags, given as they are instead of labkit's.
    """
    flags = [f"--model-repository={model_repository}"]
    if address:
        flags += [f"--http-address={address}", f"--grpc-address={address}"]
        if metrics and metrics_flags is None:
            flags.append(f"--metrics-address={address}")
    flags += [f"--http-port={ports.http}", f"--grpc-port={ports.grpc}"]
    if metrics_flags is not None:
        flags += list(metrics_flags)
    elif metrics:
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
    cmd += [  # shared memory and ulimits as in python_backend's Quick Start
        f"--shm-size={shm_size}", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
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


class TritonServer(ManagedServer):
    """A running Triton server: its URLs, its log, and ``stop()``.

    Use it as a context manager so the server stops when the block ends::

        with labkit.triton.start("model_repository") as server:
            print(server.metrics_url)
    """

    title = "Triton"

    def __init__(
        self, command: list[str], env: dict[str, str] | None, ports: Ports, mode: str, container: str = ""
    ) -> None:
        if not container and not any(SHM_FLAG in arg for arg in command):
            # the model stubs' shared memory gets a name of its own, so stop() can remove what a killed
            # or crashed server leaves in /dev/shm (Triton removes it only when it exits cleanly)
            command = [command[0], f"--backend-config=python,{SHM_FLAG}labkit_{uuid.uuid4().hex[:12]}_", *command[1:]]
        self.ports = ports
        self.mode = mode
        prefix = next((arg.split(SHM_FLAG, 1)[1] for arg in command if SHM_FLAG in arg), "")
        leftovers = [f"/dev/shm/{prefix}*"] if prefix and not container else []
        super().__init__(command, env, name="tritonserver", container=container, leftovers=leftovers)

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP/REST endpoint, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (what ``tritonclient.grpc`` takes)."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_enabled(self) -> bool:
        """Does this server serve ``/metrics``? (``--allow-metrics``; the last flag wins, as in Triton)."""
        return self._flags().get("allow-metrics", "true") == "true"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint, where Triton's flags put it.

        The metrics address defaults to the HTTP address, as in Triton (``metrics_flags=`` of :func:`start`
        may move it, e.g. to 127.0.0.2).
        """
        if self.container:
            return f"http://{self.host}:{self.ports.metrics}/metrics"
        flags = self._flags()
        address = flags.get("metrics-address") or flags.get("http-address") or self.host
        port = flags.get("metrics-port", self.ports.metrics)
        return f"http://{self.host if address == '0.0.0.0' else address}:{port}/metrics"

    def _flags(self) -> dict[str, str]:
        args = self.command[self.command.index("tritonserver") + 1 :] if self.container else self.command[1:]
        return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)

    def ready_urls(self) -> list[str]:
        """``/v2/health/ready``, and ``/metrics`` where it is served (it starts a moment after HTTP)."""
        return [f"{self.http_url}/v2/health/ready", *([self.metrics_url] if self.metrics_enabled else [])]

    def start_error(self, headline: str) -> TritonStartError:
        """A :class:`TritonStartError` built from the server's log."""
        return start_error_from_log(headline, self.log(), self.command, self.returncode)

    def stop(self, timeout: float = 15.0, graceful: bool | None = None) -> None:
        """Stop the server and every process it started (the model stubs), and remove their shared memory.

        ``graceful``: SIGTERM and up to ``timeout`` s for Triton to unload its models (running each
        ``finalize``); default ``False`` (SIGKILL at once) unless ``LABKIT_STOP=graceful``. Safe to call twice.
        """
        if graceful is None:
            graceful = os.environ.get(STOP_ENV, "kill") == "graceful"
        super().stop(timeout, graceful=graceful)

    def describe(self) -> str:
        """Mode and URLs, for ``repr``."""
        return f"{self.mode} http={self.http_url} grpc={self.grpc_url} metrics={self.metrics_url}"


_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version (\d+): (.*?)\"?$")
_ERROR_LINE = re.compile(r"^E\d{4} |^error:|Address already in use|failed to bind", re.IGNORECASE)
# Messages a CPU-only machine always prints; they are not why a start failed.
_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "failed to load 'tritonserver'", "cuda")


def start_error_from_log(
    headline: str, log: str, command: Sequence[str] = (), exit_code: int | None = None
) -> TritonStartError:
    """A :class:`TritonStartError` read from Triton's log: each model that failed to load with its
    traceback, Triton's other error lines, and the tail of the log."""
    lines = log.splitlines()
    models: dict[str, str] = {}
    for line in lines:
        match = _LOAD_FAILURE.search(line)
        key = f"'{match.group(1)}' (version {match.group(2)})" if match else ""
        if match and key not in models:
            models[key] = match.group(3).replace("\\n", "\n").strip()
    errors = [ln for ln in lines if _ERROR_LINE.search(ln) and not any(n in ln for n in _NOISE)]
    errors = [e for e in dict.fromkeys(errors) if not _LOAD_FAILURE.search(e)]
    # the option and model tables are wide and say little about a failure: leave them out
    tail = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(("|", "+-"))]
    return TritonStartError(
        headline,
        exit_code=exit_code,
        model_errors=models,
        other_errors=errors[-10:],
        log_tail=tail[-(8 if models else 20) :],
        command=list(command),
    )


def start(
    model_repository: str | os.PathLike,
    mode: str = "auto",
    *,
    models: Sequence[str] | None = None,
    ports: Ports | None = None,
    timeout: float | None = None,
    metrics: bool = True,
    metrics_interval_ms: int | None = None,
    metrics_flags: Sequence[str] | None = None,
    python_env: str | os.PathLike | None = None,
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
        metrics_flags: your own metrics flags in place of labkit's, e.g.
            ``["--metrics-port=8102", "--metrics-address=127.0.0.2"]`` (the handle's ``metrics_url`` follows them).
        python_env: local mode: a Python environment (a venv or prefix folder) whose ``bin/python3`` the model
            stubs run, so they import its packages; default this interpreter's.
        gpus: Docker mode: pass ``--gpus all``.
        image: Docker mode: the image; default ``$TRITON_IMAGE`` if set, else the pinned
            ``nvcr.io/nvidia/tritonserver:24.10-py3`` (:func:`docker_image`).
        extra_args: more ``tritonserver`` flags.

    Raises:
        TritonStartError: with the reason from Triton's log when it cannot start.
    """
    repo = Path(model_repository).resolve()
    if not repo.is_dir():
        raise TritonStartError(f"Model repository {repo} does not exist")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "auto":
        mode = _choose_mode()
    if python_env is not None and mode != "local":
        raise ValueError("python_env= works in local mode only (a container has its own Python)")
    flags = dict(
        models=models,
        metrics=metrics,
        metrics_interval_ms=metrics_interval_ms,
        metrics_flags=metrics_flags,
        log_verbose=log_verbose,
        extra_args=extra_args,
    )
    if mode == "docker":
        ok, reason = docker_available()
        if not ok:
            raise TritonStartError(
                f"Cannot run Triton in Docker ({docker_image(image)}): {reason}.\nTo fix it: {DOCKER_HINT}"
            )

    def launch() -> TritonServer:
        chosen = ports or Ports.pick()
        if metrics_flags is not None:
            given = dict(f[2:].split("=", 1) for f in metrics_flags if f.startswith("--metrics-port="))
            chosen = Ports(chosen.http, chosen.grpc, int(given.get("metrics-port", 8002)))
        if mode == "local":
            install = prepare_local_install()
            command = [str(install.binary), *server_flags(str(repo), chosen, **flags)]
            command.insert(2, f"--backend-directory={install.backend_dir}")
            env = stub_environment(install.libs_dir, python_env=python_env)
            server = TritonServer(command, env, chosen, "local")
        else:
            name = f"labkit-triton-{uuid.uuid4().hex[:8]}"
            command = docker_command(repo, chosen, name=name, image=docker_image(image), gpus=gpus, **flags)
            server = TritonServer(command, None, chosen, "docker", container=name)
        server.wait_ready(timeout or (90.0 if mode == "local" else 900.0))
        return server

    return start_with_port_retry(launch, fixed_ports=ports is not None)


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
