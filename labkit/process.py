"""Child processes that never outlive the Python that started them.

:class:`ManagedProcess` runs a command in its own process group (so everything
it spawns, e.g. Triton's model stubs, goes with it), sends its output to a log
file, and stops it:

- on ``stop()``: SIGTERM, a grace period, then SIGKILL for the whole group (SIGKILL at once with ``graceful=False``);
- at interpreter exit (``atexit``);
- when the parent is killed, even with SIGKILL: a tiny watchdog process blocks
  on a pipe whose only writer is the parent; EOF means the parent is gone, and
  the watchdog ends the group (and removes a Docker container, if any).
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
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

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


def free_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (held open together while picked)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port free on ``host`` right now."""
    return free_ports(1, host)[0]


def kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process left in process group ``pgid`` (SIGKILL at once when ``grace`` is 0)."""
    steps = ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)) if grace > 0 else ((signal.SIGKILL, 2.0),)
    for sig, wait in steps:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


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
    ) -> None:
        self.command = list(command)
        self.name = name
        self.container = container
        self.leftovers = list(leftovers)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"labkit-{name}-"))
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

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` has run."""
        return self._log_text is not None

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
