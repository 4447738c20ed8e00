"""The course book (``make book``): it builds offline, every page is there, every internal link resolves.

The build here runs with ``--no-execute`` (outputs are not the point), except that one notebook gets an
executed copy, to check the book takes outputs from build/run/ instead of executing again.
"""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from labkit import paths

ROOT = paths.ROOT
NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MARKER = "an output only the executed copy has"

sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the book's tools (Sphinx 9, myst-nb) need Python 3.11 or newer"
)


class Page(HTMLParser):
    """The links (href, src) and the ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("href", "src"):
            if found.get(name):
                self.links.append(found[name])
        if found.get("id"):
            self.ids.add(found["id"])


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """The book built into a temp folder; notebook 00 has an executed copy with a marker output."""
    out = tmp_path_factory.mktemp("book")
    run_dir = out / "run"
    run_dir.mkdir()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=MARKER + "\n")]
    nbformat.write(nb, run_dir / NOTEBOOKS[0].name)
    command = [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--no-execute", "--out", str(out)]
    done = subprocess.run([*command, "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the book did not build (Sphinx warnings are errors):\n{done.stdout}{done.stderr}"
    assert f"{NOTEBOOKS[0].name}: outputs from {run_dir}" in done.stdout
    return out / "html"


def test_every_page_is_there(book):
    index = (book / "index.html").read_text(encoding="utf-8")
    assert "Custom Prometheus metrics" in index or "custom metrics" in index.lower()
    for notebook in NOTEBOOKS:
        page = book / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        assert f"notebooks/{notebook.stem}.html" in index, f"{notebook.name} is not in the front page's navigation"
    for reference in build_book.REFERENCE:
        assert (book / reference.replace(".md", ".html")).is_file(), f"no page for {reference}"
    assert (book / "search.html").is_file() and (book / "searchindex.js").is_file(), "no search"


def test_outputs_come_from_the_executed_copy(book):
    assert MARKER in (book / "notebooks" / f"{NOTEBOOKS[0].stem}.html").read_text(encoding="utf-8")
    assert MARKER not in (book / "notebooks" / f"{NOTEBOOKS[1].stem}.html").read_text(encoding="utf-8")


def test_every_internal_link_resolves(book):
    pages = sorted(p for p in book.rglob("*.html") if p.relative_to(book).parts[0] != "_static")  # theme macros
    assert len(pages) >= len(NOTEBOOKS) + len(build_book.REFERENCE) + 1
    ids = {page: read_page(page).ids for page in pages}
    broken = []
    checked = 0
    for page in pages:
        for link in read_page(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue  # external: not part of the book
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(book)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids[target]:
                broken.append(f"{page.relative_to(book)}: {link} (no id {parts.fragment!r} there)")
    assert checked > 100
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_progress_bar_shows_its_final_state():
    """tqdm's widget (HBox of HTML, FloatProgress, HTML) becomes the text of its last state."""
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_a", "IPY_MODEL_b", "IPY_MODEL_c"]}},
        "a": {"model_name": "HTMLModel", "state": {"value": "open\u2007loop:\u2007100%"}},
        "b": {"model_name": "FloatProgressModel", "state": {"value": 300.0, "max": 300.0}},
        "c": {"model_name": "HTMLModel", "state": {"value": "\u2007300/300\u2007[00:06&lt;00:00,\u200749.9req/s]"}},
    }
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    output = nbformat.v4.new_output("display_data", data={build_book.WIDGET: view, "text/plain": "0%| | 0/300"})
    nb.cells.append(nbformat.v4.new_code_cell("", outputs=[output]))
    build_book.static_widgets(nb)
    final = "open loop: 100%|██████████| 300/300 [00:06<00:00, 49.9req/s]"
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": final}
    assert "widgets" not in nb.metadata


def test_the_pages_workflow_publishes_what_make_book_builds():
    """.github/workflows/book.yml: builds with `make book` and uploads build/book/html to Pages."""
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    assert any(run.strip() == "make book" for run in runs)
    (upload,) = [step for step in build["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert ROOT / upload["with"]["path"] == build_book.OUT / "html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [step["uses"] for step in deploy["steps"]] == ["actions/deploy-pages@v4"]
