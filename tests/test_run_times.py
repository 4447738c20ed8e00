"""Each notebook's header states its run time; the figure must be within a factor of two of
what this test run measured (nbmake, same session). Runs last: see the root conftest.py."""

from __future__ import annotations

import re

import nbformat
import pytest

from labkit import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def stated_seconds(path) -> int:
    header = nbformat.read(path, as_version=4).cells[0].source
    match = re.search(r"\*\*Run time:\*\* about (\d+) s", header)
    assert match, f"{path.name}: no 'Run time: about N s' in the header"
    return int(match.group(1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_run_time_matches_measured(path):
    import conftest

    measured = conftest.NOTEBOOK_SECONDS.get(path.name)
    if measured is None:
        pytest.skip(f"{path.name} did not run in this session: run `make test` (pytest --nbmake ... notebooks)")
    stated = stated_seconds(path)
    assert (
        stated / 2 <= measured <= stated * 2
    ), f"{path.name}: header says about {stated} s, this run measured {measured:.0f} s; update the header"
