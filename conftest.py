"""Root pytest plugin: record how long each notebook took, for the run-time check.

``tests/test_run_times.py`` compares these measurements with the "Run time:
about N s" figure in each notebook's header; it is moved to the end of the run
so the notebooks have run before it.
"""

from __future__ import annotations

import pytest

NOTEBOOK_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.nodeid.endswith(".ipynb") and report.passed:
        name = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
        NOTEBOOK_SECONDS[name] = report.duration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.nodeid.startswith("tests/test_run_times.py")]
    for item in last:
        items.remove(item)
    items.extend(last)
