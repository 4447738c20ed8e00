"""Build the course book, a static site, into build/book/html/ (``make book``).

    .venv/bin/python scripts/build_book.py [--no-execute]

The README is the front page; then every notebook with its outputs, the instructor guide and the
reference pages of docs/. A notebook's outputs come from its executed copy in build/run/ (``make run``)
when that copy has the same cells as the notebook; otherwise it is executed here, once, into build/run/
(``--no-execute``: shown without outputs instead). A tqdm progress bar is shown as the text of its final
state (a widget needs JavaScript from the network to draw). Nothing is downloaded: Sphinx, myst-nb and
sphinx-book-theme come from requirements.txt.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RUN = ROOT / "build" / "run"
OUT = ROOT / "build" / "book"
REFERENCE = ["docs/instructor-guide.md", "docs/versions.md", "docs/nv_metrics.md", "docs/porting_checklist.md",
             "deploy/kubernetes/README.md"]  # fmt: skip
LINK = re.compile(r"\]\(([^)\s]+)\)")
WIDGET = "application/vnd.jupyter.widget-view+json"

sys.path.insert(0, str(ROOT / "scripts"))
from run_notebooks import run  # noqa: E402


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """True when two notebooks have the same cells (type and source): one is an executed copy of the other."""
    return [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def executed(path: Path, execute: bool, run_dir: Path = RUN) -> nbformat.NotebookNode:
    """The notebook with outputs: its copy in ``run_dir`` if current, else executed now (or as it is)."""
    source = nbformat.read(path, as_version=4)
    copy = run_dir / path.name
    if copy.exists() and same_cells(nbformat.read(copy, as_version=4), source):
        print(f"{path.name}: outputs from {copy}")
        return nbformat.read(copy, as_version=4)
    if not execute:
        print(f"{path.name}: no current executed copy; shown without outputs (--no-execute)")
        return source
    print(f"{path.name}: executing into {run_dir}/ ...", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    ok, seconds, _ = run(path, run_dir)
    print(f"{path.name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s")
    if not ok:
        raise SystemExit(f"{path.name} failed to run: the book shows only notebooks that run")
    return nbformat.read(copy, as_version=4)


def progress_text(nb: nbformat.NotebookNode, model_id: str) -> str | None:
    """The final line of a tqdm progress bar widget (an HBox of HTML, FloatProgress, HTML), from the saved state."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    box = state.get(model_id, {})
    if box.get("model_name") != "HBoxModel":
        return None
    parts = [state.get(child.removeprefix("IPY_MODEL_"), {}) for child in box["state"].get("children", [])]
    if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    bar = parts[1]["state"]
    filled = round(10 * bar.get("value", 0) / bar["max"]) if bar.get("max") else 0
    text = f"{parts[0]['state']['value']}|{'█' * filled}{' ' * (10 - filled)}|{parts[2]['state']['value']}"
    return html.unescape(text).replace("\u2007", " ")  # the parts are HTML widgets: "&lt;" is "<"


def static_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Each progress-bar widget output becomes the text of its final state."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET)
            text = progress_text(nb, view["model_id"]) if view else None
            if text is not None:
                output["data"] = {"text/plain": text}
    nb.metadata.pop("widgets", None)
    return nb


def copy_link_targets(text: str, page: Path, stage: Path) -> None:
    """Copy into the stage every file of the repository that ``page`` links to (it becomes a download)."""
    for target in LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        found = (page.parent / target.split("#", 1)[0]).resolve()
        if found.is_file() and ROOT in found.parents:
            dest = stage / found.relative_to(ROOT)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(found, dest)


def front_page(notebooks: list[Path]) -> str:
    """The README, then the navigation: the notebooks in order, then the reference pages."""
    chapters = "\n".join(f"notebooks/{p.stem}" for p in notebooks)
    reference = "\n".join(page.removesuffix(".md") for page in REFERENCE)
    return (
        (ROOT / "README.md").read_text()
        + f"\n\n```{{toctree}}\n:caption: The course\n:hidden:\n\n{chapters}\n```\n"
        + f"\n```{{toctree}}\n:caption: Reference\n:hidden:\n\n{reference}\n```\n"
    )


def stage(out: Path, execute: bool, run_dir: Path = RUN) -> Path:
    """Lay out the book's sources in ``out/src/`` as they stand in the repository."""
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    shutil.copy2(ROOT / "book" / "conf.py", src / "conf.py")
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    (src / "index.md").write_text(front_page(notebooks))
    copy_link_targets((ROOT / "README.md").read_text(), ROOT / "README.md", src)
    for page in REFERENCE:
        (src / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / page, src / page)
        copy_link_targets((ROOT / page).read_text(), ROOT / page, src)
    for path in notebooks:
        nb = static_widgets(executed(path, execute, run_dir))
        nbformat.write(nb, src / "notebooks" / path.name)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                copy_link_targets(cell.source, path, src)
    return src


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="never execute a notebook; show it as it is")
    parser.add_argument("--out", type=Path, default=OUT, help="where src/ and html/ go (default build/book)")
    parser.add_argument("--run-dir", type=Path, default=RUN, help="executed notebooks (default build/run)")
    args = parser.parse_args(argv)
    src = stage(args.out, execute=not args.no_execute, run_dir=args.run_dir)
    site = args.out / "html"
    shutil.rmtree(site, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", str(src), str(site)]
    done = subprocess.run(command)
    if done.returncode == 0:
        print(f"book: {site / 'index.html'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
