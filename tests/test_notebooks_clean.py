"""Notebook conventions: committed without outputs, numbered, with header and summary."""

from __future__ import annotations

import re

import nbformat
import pytest

from labkit import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_course_core_notebooks_exist():
    numbers = [nb.name[:2] for nb in NOTEBOOKS]
    assert numbers[:5] == ["00", "01", "02", "03", "04"]
    assert len(numbers) == len(set(numbers)), "two notebooks share a number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} have outputs: clear them before committing"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_and_summary(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {path.name[:2]} ")
    for part in ("**Objectives**", "**Prerequisites**", "**Run time:**"):
        assert part in first.source, f"{path.name}: header lacks {part}"
    assert re.search(r"\*\*Run time:\*\* about \d+ s", first.source), "run time must be a figure in seconds"
    tail = "\n".join(c.source for c in nb.cells[-3:] if c.cell_type == "markdown")
    assert "## Summary" in tail and "## What's next" in tail


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_errors_on_purpose_are_tagged(path):
    """A cell expected to raise carries the raises-exception tag, and no cell hides errors in a bare except."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"except\s*:", cell.source), f"{path.name}: bare except hides errors"
            assert not re.search(r"except\s+(Base)?Exception\s*:\s*\n\s*pass", cell.source)
