"""``make lab`` starts JupyterLab for root too (``--allow-root`` only then), and only on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil

import psutil
import pytest

from labkit import paths, process


def listeners(proc: psutil.Process) -> set[tuple[str, int]]:
    """The addresses ``proc`` listens on; none if it has ended (JupyterLab starts short-lived helpers)."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
        return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    return set()


def arguments(proc: psutil.Process) -> list[str]:
    """``proc``'s command line; empty if it has ended."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
        return proc.cmdline()
    return []


@pytest.mark.integration
def test_make_lab_starts_and_listens_on_loopback_only(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("`make` is not installed: sudo apt-get install make")
    port, token = process.free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    lab = process.ManagedProcess(["make", "-s", "lab", f"LAB_ARGS={args}"], env=env, name="make-lab", cwd=paths.ROOT)
    try:
        url = f"http://127.0.0.1:{port}/api/status?token={token}"
        ready = lambda: process.http_ok(url) or not lab.is_running()  # noqa: E731
        process.wait_until(ready, 120, lambda: f"`make lab` to answer on {url}; its log:\n{lab.log_tail()}")
        assert lab.is_running(), f"`make lab` exited ({'as root' if os.geteuid() == 0 else 'not root'}):\n{lab.log()}"
        family = [psutil.Process(lab.pid), *psutil.Process(lab.pid).children(recursive=True)]
        listening = {address for proc in family for address in listeners(proc)}
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, p in listening if p == port} == {"127.0.0.1"}, f"JupyterLab listens on {listening}"
        # the jupyter process itself (its flags are separate arguments; the shell's are one string)
        (jupyter,) = [command for proc in family if "notebooks/" in (command := arguments(proc))]
        assert ("--allow-root" in jupyter) == (os.geteuid() == 0), jupyter
    finally:
        lab.stop()
