"""Rewrite each notebook header's "**Run time:** about N s" from a measurement (``make run-times``).

    .venv/bin/python scripts/update_run_times.py [--measured build/run_times.json] [--notebooks notebooks]

The measurement is the one the last pytest run that executed notebooks wrote (``make test``: the root
conftest.py prints it as a table and writes ``build/run_times.json``). Each notebook in it gets its
measured time rounded to 5 s (at least 5 s); the rest of the file is left byte for byte as it was.
The README's course map ("~N s" in the notebook's row) gets the same figure, so the two never disagree
(``tests/test_run_times.py`` checks that). Notebooks the measurement does not list are not touched.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER_RUN_TIME = re.compile(r"\*\*Run time:\*\* about (\d+) s")


def rounded(seconds: float) -> int:
    """To the nearest 5 s, and never below 5 s."""
    return max(5, 5 * round(seconds / 5))


def rewrite(path: Path, seconds: int) -> tuple[int, int]:
    """Set the header's figure to ``seconds``; return (old, new). Raises ValueError if the header states none."""
    text = path.read_text(encoding="utf-8")
    cells = json.loads(text)["cells"]
    header = "".join(cells[0]["source"]) if cells else ""
    found = HEADER_RUN_TIME.search(header)
    if not found:
        raise ValueError(f"{path.name}: no '**Run time:** about N s' in the header (its first cell)")
    old = int(found.group(1))
    # the header is the first cell, so its figure is the first one in the file
    updated = HEADER_RUN_TIME.sub(f"**Run time:** about {seconds} s", text, count=1)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return old, seconds


def readme_row(name: str) -> re.Pattern:
    """The time cell of notebook ``name``'s row in the README's course map."""
    stem = re.escape(name.removesuffix(".ipynb"))
    return re.compile(rf"^(\| \[{stem}\]\(notebooks/{re.escape(name)}\) \|.*\| ~)(\d+)( s \|)$", re.MULTILINE)


def rewrite_readme(readme: Path, times: dict[str, int]) -> None:
    """Set each listed notebook's "~N s" in the README's course map."""
    text = readme.read_text(encoding="utf-8")
    for name, seconds in times.items():
        text = readme_row(name).sub(rf"\g<1>{seconds}\g<3>", text)
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, default=ROOT / "build" / "run_times.json")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    if not args.measured.exists():
        print(f"{args.measured} does not exist: run the notebooks first (make test)", file=sys.stderr)
        return 1
    rows = json.loads(args.measured.read_text(encoding="utf-8"))["notebooks"]
    written = {}
    for name, row in sorted(rows.items()):
        path = args.notebooks / name
        if not path.exists():
            print(f"{name}: not in {args.notebooks}, skipped")
            continue
        old, new = rewrite(path, rounded(row["measured_s"]))
        written[name] = new
        change = "unchanged" if old == new else f"about {old} s -> about {new} s"
        print(f"{name}: {change} (measured {row['measured_s']:.0f} s)")
    if args.readme.exists():
        rewrite_readme(args.readme, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
