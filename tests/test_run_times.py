"""Notebook run times are reported, not asserted.

Each header states "**Run time:** about N s". How long a notebook takes depends on how busy the machine
is, so no test compares it with a clock: the root conftest.py prints each header's figure beside the
time the session measured and writes build/run_times.json, and ``make run-times``
(scripts/update_run_times.py) rewrites the headers from that file. What is tested here is what can
fail for a reason: every header states a figure, the report reads it, and the update rewrites only it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

import conftest
from labkit import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
SCRIPT = paths.ROOT / "scripts" / "update_run_times.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_header_states_a_run_time(path):
    stated = conftest.header_seconds(path)
    assert stated is not None, f"{path.name}: no '**Run time:** about N s' in the header (its first cell)"
    assert stated > 0


def test_readme_course_map_states_each_header_time():
    """The README's course map says the same "~N s" as each notebook's header (make run-times writes both)."""
    readme = (paths.ROOT / "README.md").read_text()
    update_run_times = load_script()
    for path in NOTEBOOKS:
        row = update_run_times.readme_row(path.name).search(readme)
        assert row, f"README.md: no course-map row with a time for {path.name}"
        assert int(row.group(2)) == conftest.header_seconds(path), (
            f"README.md says ~{row.group(2)} s for {path.name}, its header about {conftest.header_seconds(path)} s: "
            "run `make run-times` (or fix one of the two)"
        )


def load_script():
    spec = importlib.util.spec_from_file_location("update_run_times", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_puts_the_header_beside_the_measurement(tmp_path):
    first, second = NOTEBOOKS[:2]
    rows = conftest.run_times({first.name: 41.26, second.name: 3.0, "99_not_a_notebook.ipynb": 1.0})
    assert rows == {
        first.name: {"header_s": conftest.header_seconds(first), "measured_s": 41.3},
        second.name: {"header_s": conftest.header_seconds(second), "measured_s": 3.0},
    }
    target = tmp_path / "build" / "run_times.json"
    conftest.write_run_times(rows, target)
    assert json.loads(target.read_text())["notebooks"] == rows


def update(notebooks, measured, readme=None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--notebooks", str(notebooks), "--measured", str(measured)]
    command += ["--readme", str(readme or notebooks / "README.md")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_update_rewrites_only_the_figure_of_the_measured_notebooks(tmp_path):
    first, second = NOTEBOOKS[:2]
    for path in (first, second):
        shutil.copy(path, tmp_path / path.name)
    measured = tmp_path / "run_times.json"
    conftest.write_run_times(conftest.run_times({first.name: 123.4}, tmp_path), measured)

    readme = tmp_path / "README.md"
    readme.write_text((paths.ROOT / "README.md").read_text())
    done = update(tmp_path, measured, readme)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"notebooks/{first.name}) |" in readme.read_text()
    assert load_script().readme_row(first.name).search(readme.read_text()).group(2) == "125"
    new = 125  # 123.4 s, rounded to 5 s
    assert conftest.header_seconds(tmp_path / first.name) == new
    old_text, new_text = first.read_text(), (tmp_path / first.name).read_text()
    assert new_text == old_text.replace(
        f"**Run time:** about {conftest.header_seconds(first)} s", f"**Run time:** about {new} s", 1
    )
    assert (tmp_path / second.name).read_text() == second.read_text()  # not measured: not touched
    assert f"{first.name}: about {conftest.header_seconds(first)} s -> about {new} s" in done.stdout

    again = update(tmp_path, measured, readme)
    assert again.returncode == 0 and f"{first.name}: unchanged" in again.stdout
    assert (tmp_path / first.name).read_text() == new_text


def test_update_without_a_measurement_says_what_to_run(tmp_path):
    done = update(tmp_path, tmp_path / "missing.json")
    assert done.returncode == 1 and "run the notebooks first (make test)" in done.stderr
