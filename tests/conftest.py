"""Shared fixtures and the checks that keep the tests honest.

- a real Triton on the reference model (``server``) and the tool checks (``require_tool``);
- a test that starts a tritonserver or prometheus (any :class:`labkit.process.ManagedProcess`)
  must be marked ``integration``: ``make unit`` (``-m "not integration"``) runs no server;
- a notebook cell tagged ``raises-exception`` must raise when nbmake runs it (nbmake itself
  passes such a cell either way);
- at the end of the session no tritonserver, model stub, prometheus or labkit watchdog
  started by this run is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import psutil
import pytest

from labkit import paths, process, triton

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


# ------------------------------------------------------------------ servers need the integration marker

_RUNNING: list[pytest.Item] = []  # the test whose setup, call or teardown runs now

# Every process this run starts carries this token in its environment (their children inherit it),
# so the end-of-session check finds them and never mistakes another run's processes for ours.
RUN_ENV = "LABKIT_TEST_RUN"
RUN_TOKEN = f"{os.getpid()}-{uuid.uuid4().hex}"
os.environ[RUN_ENV] = RUN_TOKEN  # a fresh token, also in a pytest run started by a test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _RUNNING.append(item)
    try:
        return (yield)
    finally:
        _RUNNING.remove(item)


_managed_init = process.ManagedProcess.__init__


def _integration_only_init(self, command, env=None, *args, **kwargs):
    """ManagedProcess.__init__, refused in a test not marked ``integration``; tags env with the run token."""
    item = _RUNNING[-1] if _RUNNING else None
    if item is None or item.get_closest_marker("integration") is None:
        where = item.nodeid if item is not None else "code outside any test"
        pytest.fail(
            f"{where} starts `{Path(command[0]).name}` but is not marked integration, so `make unit` "
            '(-m "not integration", "no server") would run it: add @pytest.mark.integration to the test '
            "(or pytestmark = pytest.mark.integration to its module)",
            pytrace=False,
        )
    if env is not None:
        env = {**env, RUN_ENV: RUN_TOKEN}
    _managed_init(self, command, env, *args, **kwargs)


process.ManagedProcess.__init__ = _integration_only_init


# ------------------------------------------------------------------ raises-exception cells must raise


def silent_raises_exception_cells(nb) -> list[int]:
    """Indexes of the code cells tagged ``raises-exception`` whose outputs hold no error."""
    return [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and "raises-exception" in cell.get("metadata", {}).get("tags", [])
        and not any(output.get("output_type") == "error" for output in cell.get("outputs", []))
    ]


try:
    from nbmake import nb_run
    from nbmake.nb_result import NotebookError
except ImportError:  # nbmake not installed: no notebook items to check
    nb_run = None
else:
    _nbmake_execute = nb_run.NotebookRun.execute

    def _execute_and_check_raises(self):
        """nbmake's run of one notebook; a tagged cell that ran without raising fails it."""
        result = _nbmake_execute(self)
        if result.error is None:  # every cell ran: the tagged ones must show their error
            silent = silent_raises_exception_cells(result.nb)
            if silent:
                index = silent[0]
                summary = f"cell {index} is tagged raises-exception but raised nothing"
                source = result.nb.cells[index].source
                trace = f"{75 * '-'}\n{source}\n\n{summary} (tagged cells that did not raise: {silent})"
                result.error = NotebookError(summary=summary, trace=trace, failing_cell_index=index)
        return result

    nb_run.NotebookRun.execute = _execute_and_check_raises


# ------------------------------------------------------------------ nothing left behind

OUR_KINDS = ("tritonserver", "triton_python_backend_stub", "prometheus")
_LEFT_BEHIND: list[str] = []


def process_kind(proc: psutil.Process) -> str | None:
    """The kind of ``proc``: tritonserver, triton_python_backend_stub, prometheus, labkit watchdog, or None."""
    command = proc.cmdline()
    if not command:
        return None
    if os.path.basename(command[0]) in OUR_KINDS:
        return os.path.basename(command[0])
    if process._WATCHDOG in command:
        return "labkit watchdog"
    return None


def left_behind() -> list[tuple[psutil.Process, str]]:
    """Servers, stubs and watchdogs of THIS run still alive: our token in their environment, or our descendants.

    Processes of other runs (other test sessions on this machine) carry another token or none, and
    are not descendants of this process, so they are never listed.
    """
    descendants = {child.pid for child in psutil.Process().children(recursive=True)}
    found = []
    for proc in psutil.process_iter():
        try:
            kind = process_kind(proc)
            if kind and (proc.pid in descendants or proc.environ().get(RUN_ENV) == RUN_TOKEN):
                command = [arg if arg != process._WATCHDOG else "<watchdog code>" for arg in proc.cmdline()]
                found.append((proc, f"{proc.pid} ({kind}): {' '.join(command)[:300]}"))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if any process this run started outlives it (after 20 s for the watchdogs)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED:  # stopped by hand: the exit handlers stop what is left
        return
    found: list[tuple[psutil.Process, str]] = []

    def all_ended() -> bool:
        found[:] = left_behind()
        return not found

    with contextlib.suppress(TimeoutError):
        process.wait_until(all_ended, 20, "the processes this run started to end", interval=0.5)
    if found:
        _LEFT_BEHIND[:] = [line for _, line in found]
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if _LEFT_BEHIND:
        terminalreporter.section("processes this run left behind", red=True)
        terminalreporter.line("still running after the last test (stop every server the tests start):", red=True)
        for line in _LEFT_BEHIND:
            terminalreporter.line(f"  {line}")
