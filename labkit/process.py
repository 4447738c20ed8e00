"""Child processes that never outlive the Python that started them, and the one way to wait.

- :func:`wait_until`: the course's one polling loop; raises after a timeout saying what was awaited.
- :class:`ManagedProcess`: a command in its own process group (what it spawns, e.g. Triton's model
  stubs, goes with it), logged to a file, stopped by ``stop()``, at interpreter exit, and, through a
  tiny watchdog that blocks on a pipe only the parent writes to, when the parent is killed (SIGKILL too).
- :class:`ManagedServer`: a ManagedProcess with readiness over HTTP, a start error quoting its log and a
  context manager: the base of the Triton and Prometheus handles; :func:`start_with_port_retry`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")

_WATCHDOG = r"""
import glob, os, signal, subprocess, sys, time
pgid, container, leftovers = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
sys.stdin.buffer.read()
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
if container:
    subprocess.run(["docker", "rm", "-f", container], capture_output=True)
for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 2.0)):
    if not alive():
        break
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        break
    end = time.monotonic() + wait
    while alive() and time.monotonic() < end:
        time.sleep(0.1)
for pattern in leftovers:
    for path in glob.glob(pattern):
        try:
            os.remove(path)
        except OSError:
            pass
"""

_LIVE: "weakref.WeakSet[ManagedProcess]" = weakref.WeakSet()


def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop()


atexit.register(_stop_all)


_HANDED_OUT: deque[int] = deque(maxlen=512)
_HANDED_OUT_LOCK = threading.Lock()


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (held open together while picked).

    Never one this process handed out among its last 512 (threads starting servers side by side would
    otherwise be given the port another has not bound yet); another process may still take a port
    before it is used: :func:`start_with_port_retry` starts again with new ones."""
    socks: list[socket.socket] = []
    try:
        with _HANDED_OUT_LOCK:
            ports: list[int] = []
            while len(ports) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((host, 0))
                socks.append(sock)  # held until the end, so the OS offers another next time
                port = sock.getsockname()[1]
                if port not in _HANDED_OUT:
                    ports.append(port)
            _HANDED_OUT.extend(ports)
        return ports
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port free on ``host`` right now."""
    return free_ports(1, host)[0]


def wait_until(
    predicate: Callable[[], T], timeout: float, describe: str | Callable[[], str], interval: float = 0.2
) -> T:
    """Call ``predicate()`` every ``interval`` s until it returns something true, and return that.

    After ``timeout`` s raise :class:`TimeoutError` naming what was awaited (``describe``, or what it returns
    when it is a function, e.g. the last value read). An exception from ``predicate`` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = predicate()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            what = describe() if callable(describe) else describe
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of ``url`` answers 200 within ``timeout`` s."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process left in process group ``pgid`` (SIGKILL at once when ``grace`` is 0)."""
    steps = ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)) if grace > 0 else ((signal.SIGKILL, 2.0),)
    for sig, wait in steps:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: _group_gone(pgid), wait, f"process group {pgid} to end", interval=0.1)
            return


class ManagedProcess:
    """A command run in its own process group, logged to a file, stopped for sure.

    ``container`` names a Docker container the command runs, removed on stop.
    ``leftovers`` are glob patterns of files the command leaves behind when it is
    killed (e.g. shared-memory regions in ``/dev/shm``), removed once it is gone.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        name: str = "process",
        container: str = "",
        cwd: str | os.PathLike | None = None,
        leftovers: Sequence[str] = (),
        workdir: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.name = name
        self.container = container
        self.leftovers = list(leftovers)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"labkit-{name}-"))  # removed on stop
        self.log_path = self.workdir / f"{name}.log"
        self._log_text: str | None = None
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own process group: its children go with it
            )
        read_end, self._watchdog_pipe = os.pipe()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.popen.pid), container, *self.leftovers],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(read_end)
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        """Process id of the command (also its process group id)."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once it has ended, else None."""
        return self.popen.poll()

    def is_running(self) -> bool:
        """True while the command is alive."""
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the command has printed so far (kept after stop)."""
        if self._log_text is not None:
            return self._log_text
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0, graceful: bool = True) -> None:
        """Stop the command and its whole process group. Safe to call twice.

        ``graceful``: SIGTERM first and up to ``timeout`` seconds to exit; otherwise SIGKILL at once.
        """
        if self._log_text is not None:
            return
        if self.container:
            subprocess.run(
                ["docker", "stop", "-t", "5" if graceful else "0", self.container], capture_output=True, timeout=30
            )
        if graceful and self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if not graceful and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # the whole group at once
            self.popen.wait(timeout=5)  # reaped, so the group check below does not wait on a zombie
        kill_group(self.popen.pid, grace=5.0 if graceful else 0.0)
        if self.popen.poll() is None:
            self.popen.wait(timeout=5)
        for pattern in self.leftovers:
            for path in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.remove(path)
        os.close(self._watchdog_pipe)  # the watchdog wakes, finds nothing left, and exits
        try:
            self._watchdog.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
        self._log_text = self.log()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _LIVE.discard(self)


class ManagedServer(ManagedProcess):
    """A :class:`ManagedProcess` that serves HTTP: readiness, a start error that quotes the log, context manager.

    Subclasses (``labkit.triton.TritonServer``, ``labkit.prometheus.Prometheus``) say which URLs must
    answer 200 (:meth:`ready_urls`), which error a failed start raises (:meth:`start_error`), and what
    ``repr`` shows (``describe()``).
    """

    title = "server"  # how failures name it
    host = "127.0.0.1"

    def ready_urls(self) -> list[str]:
        """The URLs that answer 200 once the server is ready."""
        raise NotImplementedError

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True when every one of :meth:`ready_urls` answers 200."""
        return all(http_ok(url, timeout) for url in self.ready_urls())

    def start_error(self, headline: str) -> Exception:
        """The exception a failed start raises (the server is stopped first, its log kept)."""
        return RuntimeError(f"{headline}.\n{self.log_tail(20)}")

    def wait_ready(self, timeout: float) -> None:
        """Block until the server is ready; if it exits or times out, stop it and raise :meth:`start_error`."""

        def ready() -> bool:
            if not self.is_running():
                raise self._failed(f"{self.title} exited with code {self.returncode}")
            return self.is_ready(timeout=1.0)

        try:
            wait_until(ready, timeout, f"{self.title} to be ready")
        except TimeoutError:
            raise self._failed(f"{self.title} was not ready after {timeout:.0f} s") from None

    def _failed(self, headline: str) -> Exception:
        self.stop()
        return self.start_error(headline)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {state} {self.describe()}>"


S = TypeVar("S", bound=ManagedServer)
# how a taken port reads in the error: Triton's HTTP and metrics say "Socket '127.0.0.1:N' already in use",
# its gRPC and Prometheus "address already in use" (run on 2.51.0 and 3.x)
PORT_TAKEN = ("already in use", "failed to bind")


def start_with_port_retry(launch: Callable[[], S], fixed_ports: bool = False, attempts: int = 3) -> S:
    """``launch()`` picks free ports, starts a server and waits until it is ready; try again (up to
    ``attempts`` times) when the start failed because another process took a port in between.
    With ``fixed_ports`` (the caller chose them) there is nothing to pick again: one attempt."""
    for attempt in range(1 if fixed_ports else attempts):
        try:
            return launch()
        except Exception as err:
            if attempt + 1 < attempts and not fixed_ports and any(t in str(err).lower() for t in PORT_TAKEN):
                continue
            raise
    raise AssertionError("unreachable")
