"""Execute every notebook headless into build/run/ and render each to HTML (``make run``).

    .venv/bin/python scripts/run_notebooks.py [NN ...] [--images DIR]

Cells tagged ``raises-exception`` may raise; any other error stops that
notebook and is reported. With ``--images DIR`` the PNG figures of notebook 04
are also written to DIR (the README's plots come from there).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "build" / "run"


def run(path: Path, out_dir: Path) -> tuple[bool, float, Path]:
    """Execute one notebook in its own folder; write the executed copy and its HTML page."""
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    ok = True
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    except CellExecutionError as err:
        ok = False
        print(f"    error: {str(err).strip().splitlines()[-1]}", flush=True)
    elapsed = time.monotonic() - started
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    page = out_dir / (path.stem + ".html")
    page.write_text(html, encoding="utf-8")
    return ok, elapsed, page


def save_images(executed: Path, target: Path) -> list[Path]:
    """Write the PNG outputs of an executed notebook as ``<stem>_<n>.png``."""
    nb = nbformat.read(executed, as_version=4)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                png = target / f"{executed.stem}_{len(written) + 1}.png"
                png.write_bytes(base64.b64decode(data["image/png"]))
                written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="run only these notebooks, e.g. 00 04")
    parser.add_argument("--images", type=Path, help="also write notebook 04's figures as PNG files here")
    args = parser.parse_args(argv)
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.numbers:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.numbers]
    OUT.mkdir(parents=True, exist_ok=True)
    failed = []
    total = time.monotonic()
    for index, path in enumerate(notebooks, start=1):
        print(f"[{index}/{len(notebooks)}] {path.name} ...", flush=True)
        ok, elapsed, page = run(path, OUT)
        status = "ok" if ok else "FAILED"
        print(
            f"[{index}/{len(notebooks)}] {path.name}: {status} in {elapsed:.0f} s -> {page.relative_to(ROOT)}",
            flush=True,
        )
        if not ok:
            failed.append(path.name)
    if args.images:
        for executed in OUT.glob("04_*.ipynb"):
            for png in save_images(executed, args.images):
                print(f"figure -> {png}")
    print(
        f"{len(notebooks) - len(failed)} of {len(notebooks)} notebooks ran in {time.monotonic() - total:.0f} s; "
        f"HTML pages in {OUT.relative_to(ROOT)}/"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
