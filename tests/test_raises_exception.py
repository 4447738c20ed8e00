"""A notebook cell tagged ``raises-exception`` must raise when nbmake runs it.

nbmake (through nbclient) lets a tagged cell pass whether it raises or not;
tests/conftest.py wraps nbmake's run of a notebook so that a tagged cell that
ran without an error fails the notebook. Shown here on tiny notebooks.
"""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from tests import conftest

pytestmark = pytest.mark.notebook


def notebook(*cells: tuple[str, bool]):
    """A notebook of code cells ``(source, tagged raises-exception)``."""
    nb = new_notebook(
        cells=[new_code_cell(src, metadata={"tags": ["raises-exception"]} if tag else {}) for src, tag in cells]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_silent_cells_are_found_in_executed_outputs():
    nb = notebook(("1 / 0", True), ("x = 1", True), ("y = 2", False))
    nb.cells[0].outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="no error\n")]
    assert conftest.silent_raises_exception_cells(nb) == [1]


def run(tmp_path, nb):
    from nbmake.nb_run import NotebookRun  # execute() is the one tests/conftest.py wraps

    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return NotebookRun(path, 60).execute()


def test_nbmake_fails_a_tagged_cell_that_does_not_raise(tmp_path):
    result = run(tmp_path, notebook(("1 / 0", True), ("x = 1  # no error", True), ("print('after')", False)))
    assert result.error is not None, "a tagged cell that did not raise must fail the notebook"
    assert result.error.failing_cell_index == 1
    assert "tagged raises-exception but raised nothing" in result.error.summary
    assert "x = 1  # no error" in result.error.trace


def test_nbmake_passes_tagged_cells_that_raise(tmp_path):
    result = run(tmp_path, notebook(("1 / 0", True), ("print('after')", False)))
    assert result.error is None, result.error
