"""The interface learners use, in a real browser: JupyterLab running notebook 04, and the course book.

Playwright drives Debian's ``chromium`` by its path (no browser download; ``.ci/run`` installs it with apt).
Without chromium or Playwright the tests skip with the install step, and fail in CI (``CI=true``).
Pages reach 127.0.0.1 only. Screenshots go to build/screenshots/ (also at a failure, ``*-failure.png``).

- JupyterLab on a free port with a token serves a copy of notebooks/ (the run's outputs never reach the
  tracked notebooks): notebook 04 opens, *Run > Run All Cells* runs it, and once its kernel is idle every cell
  has run in order, no cell shows an error, every figure is an image the browser decoded, and tqdm's progress
  bars are drawn as widgets (not their text fallback). Afterwards no kernel, tritonserver or stub is left.
- The book, built from the current sources (notebook 04 with outputs), has the notebooks in its navigation;
  its page of notebook 04, reached from there, shows the figures and no traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import warnings

import nbformat
import pytest

from labkit import paths
from tests import browser_lab
from tests.browser_lab import SCREENSHOTS, JupyterLab, OfflineContext, StaticSite, screenshot_on_failure

pytestmark = pytest.mark.integration  # JupyterLab's kernel starts a real tritonserver (notebook 04)

NB04 = paths.NOTEBOOKS / "04_scrape_and_plot.ipynb"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
NOTEBOOK_RUN_S = 600  # notebook 04 takes about 30-60 s on the 2-core course machine
STDERR = "application/vnd.jupyter.stderr"
# what the page shows when a widget is not drawn: the model's repr, or the widget manager's complaint
WIDGET_FALLBACK = re.compile(
    r"^\s*HBox\(children=|FloatProgress\(|Error displaying widget|Loading widget|model not found"
)
DRAWING = re.compile(r"^fig\s*=", re.MULTILINE)  # the notebooks' figures are `fig = ...` at top level of a cell
TRAFFIC = re.compile(r"traffic\.(closed_loop|open_loop|run_phases)\(")


def code_cells(nb, pattern: re.Pattern) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and pattern.search(cell.source)]


def figure_cells(nb) -> list[int]:
    """Indexes of the cells that draw a figure (assign ``fig`` at top level)."""
    return code_cells(nb, DRAWING)


def progress_cells(nb) -> list[int]:
    """Indexes of the cells that send traffic with labkit's tqdm progress bar (not ``progress=False``)."""
    return [i for i in code_cells(nb, TRAFFIC) if "progress=False" not in nb.cells[i].source]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium, closed after the module."""
    executable = browser_lab.chromium_path()
    start = browser_lab.sync_playwright()
    with start() as playwright:
        chromium = browser_lab.launch_chromium(playwright, executable)
        yield chromium
        chromium.close()


@pytest.fixture
def offline(browser):
    context = OfflineContext(browser)
    yield context
    context.close()


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a copy of notebooks/; afterwards nothing it started (kernels, Triton, stubs) is left."""
    root = tmp_path / "notebooks"
    shutil.copytree(paths.NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    server = JupyterLab.start(root, tmp_path / "jupyter")
    yield server
    left = server.stop_everything()
    assert not left, "still running after JupyterLab stopped (killed now):\n" + "\n".join(left)


@pytest.mark.timeout(NOTEBOOK_RUN_S + 300)
def test_notebook_04_runs_in_jupyterlab(offline, lab):  # the browser first: it may skip
    nb = nbformat.read(NB04, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "raises-exception" in c.get("metadata", {}).get("tags", [])]
    assert not tagged, f"cells {tagged} raise on purpose: Run All stops there; run the rest from below them"
    figures, bars = figure_cells(nb), progress_cells(nb)
    assert len(figures) >= 3 and bars, f"notebook 04 changed: figures in cells {figures}, progress in {bars}"
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]

    page = offline.new_page()
    with screenshot_on_failure(page, "jupyterlab_04"):
        page.goto(lab.url(f"lab/tree/{NB04.name}"))
        indicator = page.locator(f"{PANEL} .jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
        kernel = page.locator("#jp-main-statusbar .jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle")
        kernel.wait_for(timeout=120_000)  # the kernel started; it is idle once the page's first requests are done
        page.wait_for_function("el => el.dataset.status === 'idle'", arg=indicator.element_handle(), timeout=60_000)

        started = time.monotonic()
        page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_function(
            "el => el.dataset.status === 'busy'", arg=indicator.element_handle(), polling=100, timeout=60_000
        )
        page.wait_for_function(
            "el => el.dataset.status === 'idle'", arg=indicator.element_handle(), timeout=NOTEBOOK_RUN_S * 1000
        )
        seconds = time.monotonic() - started
        kernel.wait_for(timeout=10_000)

        cells = browser_lab.read_notebook(page, PANEL)
        assert sorted(cells) == list(range(len(nb.cells))), f"the page shows cells {sorted(cells)}"
        prompts = [cells[i]["prompt"] for i in code]
        assert prompts == [
            f"[{n}]:" for n in range(1, len(code) + 1)
        ], f"after {seconds:.0f} s the code cells' prompts are {prompts}: not every cell ran, in order, once"

        outputs = [(i, out) for i in code for out in cells[i]["outputs"]]
        # an exception (JupyterLab draws it as stderr), a warning, tqdm's text bar: all red boxes on stderr
        errors = [
            f"cell {i}: {out['text'][:1000]}"
            for i, out in outputs
            if out["mime"] == STDERR or "Traceback" in out["text"]
        ]
        assert not errors, "error output (stderr) on the page:\n" + "\n".join(errors)

        images = {i: cells[i]["images"] for i in code if cells[i]["images"]}
        broken = {i: [img for img in found if not img["width"]] for i, found in images.items()}
        assert not any(broken.values()), f"images the browser could not decode: {broken}"
        assert all(images.get(i) for i in figures), f"figure cells {figures}; cells with images: {sorted(images)}"

        fallback = [f"cell {i}: {out['text'][:200]}" for i, out in outputs if WIDGET_FALLBACK.search(out["text"])]
        assert not fallback, "widgets not drawn:\n" + "\n".join(fallback)
        for i in bars:
            drawn = cells[i]["bars"]
            widgets = [out for out in cells[i]["outputs"] if out["widget"]]
            assert drawn and len(drawn) == len(widgets), f"cell {i}: outputs {cells[i]['outputs']}, bars drawn {drawn}"
            assert all(bar["width"] > 0 and bar["filled"] > 0 and "req" in bar["text"] for bar in drawn), drawn

        assert not offline.refused, f"the page tried to leave 127.0.0.1: {offline.refused}"
        assert not offline.page_errors, f"uncaught JavaScript errors: {offline.page_errors}"

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        cell = f"{PANEL} .jp-Cell[data-windowed-list-index='{{}}']"
        browser_lab.show(page, f"{cell.format(figures[0])} .jp-OutputArea-output img")
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_04.png"))
        browser_lab.show(page, f"{cell.format(bars[0])} .widget-hprogress")
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_04_progress.png"))
    print(f"notebook 04 ran in JupyterLab in {seconds:.0f} s")


# ------------------------------------------------------------------ the book


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The book built from the current sources into a temp folder, notebook 04 with its outputs.

    04's outputs come from build/run/ when that copy is current, else 04 is executed (once) for it; the
    other notebooks are shown without outputs (``--no-execute``), as tests/test_book.py builds it.
    """
    if sys.version_info < (3, 11):
        pytest.skip("the book's tools (Sphinx 9, myst-nb) need Python 3.11 or newer")
    script = paths.ROOT / "scripts" / "build_book.py"
    sys.path.insert(0, str(script.parent))
    import build_book
    import run_notebooks

    out = tmp_path_factory.mktemp("browser-book")
    run_dir = out / "run"
    run_dir.mkdir()
    current = build_book.RUN / NB04.name
    if current.exists() and build_book.same_cells(nbformat.read(current, 4), nbformat.read(NB04, 4)):
        shutil.copy2(current, run_dir / NB04.name)
    else:
        ok, seconds, _ = run_notebooks.run(NB04, run_dir)
        assert ok, f"{NB04.name} failed to run for the book ({seconds:.0f} s): see {run_dir}"
    command = [sys.executable, str(script), "--no-execute", "--out", str(out), "--run-dir", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the book did not build:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return out / "html"


@pytest.fixture
def site(book):
    server = StaticSite.start(book)
    yield server
    server.stop()


@pytest.mark.timeout(NOTEBOOK_RUN_S + 600)  # the book fixture may run notebook 04, then builds the book
def test_book_pages_render_in_a_browser(offline, site):
    notebooks = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    figures = figure_cells(nbformat.read(NB04, as_version=4))
    page = offline.new_page()
    with screenshot_on_failure(page, "book"):
        page.goto(f"{site.base}/index.html")
        heading = page.locator("article h1").first.inner_text().strip().rstrip("#").strip()
        assert heading and page.title().startswith(heading), f"title {page.title()!r}, heading {heading!r}"
        nav = page.locator("nav.bd-docs-nav")
        nav.wait_for(state="visible")
        listed = nav.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        missing = [nb.stem for nb in notebooks if f"notebooks/{nb.stem}.html" not in listed]
        assert not missing, f"not in the navigation sidebar: {missing} (it lists {listed})"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "book_index.png"))

        nav.locator(f"a[href='notebooks/{NB04.stem}.html']").click()
        page.wait_for_url(f"**/notebooks/{NB04.stem}.html")
        assert page.title().startswith("04"), page.title()
        assert "Traceback" not in page.locator("article").inner_text()
        images = page.locator("article .cell_output img")
        page.wait_for_function(
            "() => [...document.querySelectorAll('article img')].every(i => i.complete)", timeout=30_000
        )
        widths = images.evaluate_all("images => images.map(i => i.naturalWidth)")
        assert len(widths) >= len(figures) and all(widths), f"{len(figures)} figures expected; image widths {widths}"
        images.first.evaluate("image => image.scrollIntoView({block: 'center'})")
        page.screenshot(path=str(SCREENSHOTS / "book_04.png"))
        assert not offline.page_errors, f"uncaught JavaScript errors: {offline.page_errors}"
    if offline.refused:
        warnings.warn(f"the book's pages asked for more than 127.0.0.1 (refused): {offline.refused}", stacklevel=1)
