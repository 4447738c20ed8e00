"""Root pytest plugin: how long each notebook took, reported beside the figure its header states.

Each notebook's header says "**Run time:** about N s". That figure is a measurement, not a promise a
busy machine must keep, so nothing asserts it: at the end of a session that ran notebooks (``make test``,
nbmake), this plugin prints a table (notebook, header says, measured) and writes it to
``build/run_times.json``; ``make run-times`` (``scripts/update_run_times.py``) rewrites the headers from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
RUN_TIMES = ROOT / "build" / "run_times.json"
HEADER_RUN_TIME = re.compile(r"\*\*Run time:\*\* about (\d+) s")

NOTEBOOK_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.nodeid.endswith(".ipynb") and report.passed:
        name = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
        NOTEBOOK_SECONDS[name] = report.duration


def header_seconds(path: Path) -> int | None:
    """The "about N s" of a notebook's header (its first cell), or None where it states none."""
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    source = "".join(cells[0]["source"]) if cells else ""
    match = HEADER_RUN_TIME.search(source)
    return int(match.group(1)) if match else None


def run_times(measured: dict[str, float], notebooks: Path = ROOT / "notebooks") -> dict[str, dict]:
    """Per notebook that ran: what its header says and what this session measured (seconds)."""
    return {
        name: {"header_s": header_seconds(notebooks / name), "measured_s": round(seconds, 1)}
        for name, seconds in sorted(measured.items())
        if (notebooks / name).exists()
    }


def write_run_times(rows: dict[str, dict], path: Path = RUN_TIMES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    note = "written by the root conftest.py at the end of a pytest run; `make run-times` rewrites the headers from it"
    path.write_text(json.dumps({"note": note, "notebooks": rows}, indent=2) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter) -> None:
    rows = run_times(NOTEBOOK_SECONDS)
    if not rows:
        return
    write_run_times(rows)
    terminalreporter.write_sep("-", "notebook run times (a report, not a test)")
    width = max(len(name) for name in rows)
    terminalreporter.write_line(f"{'notebook':{width}}  header says  measured")
    for name, row in rows.items():
        header = f"about {row['header_s']} s" if row["header_s"] is not None else "(none)"
        terminalreporter.write_line(f"{name:{width}}  {header:>11}  {row['measured_s']:6.0f} s")
    shown = RUN_TIMES.relative_to(ROOT)
    terminalreporter.write_line(f"written to {shown}; `make run-times` rewrites the headers from it")
