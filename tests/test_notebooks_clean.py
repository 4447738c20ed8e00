"""Notebook conventions: committed without outputs, numbered, and one template for all.

The template every ``NN_*.ipynb`` follows:

- the first cell: ``# NN Title``, an intro paragraph (prose: what the notebook is about and why it matters),
  then **Objectives**, **Prerequisites** and **Run time:**;
- every exercise is a level-2 ``## Exercise...`` heading;
- one import style for the course's packages: ``from labkit import <module>`` and ``from labcheck import <module>``,
  then ``<module>.function(...)``; never ``import labkit.x``, ``from labkit.x import y`` or ``labkit.x.y(...)``;
- one kernel (``python3``, displayed as ``Python 3 (ipykernel)``);
- no code cell longer than 35 lines;
- no hand-written deadline loop: waits go through ``wait_until`` (``labkit.process``), which notebook 02 shows
  in full, the same code as labkit's;
- the last cells: ``## Summary``, ``## What's next`` and a short ``## Resources`` list of links.

Each check is a function that returns the problems it finds (naming the notebook and the cell); the tests run
them on every notebook, and on small broken notebooks to show that each one can fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from labkit import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"
MAX_CODE_LINES = 35
INTRO_MIN_WORDS = 20
PACKAGES = ("labkit", "labcheck")
LABCHECK_MODULES = {"checks", "preflight"}


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
def test_header(path):
    """The first cell: title, Objectives, Prerequisites, a run time (the ending: ending_problems below)."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {path.name[:2]} ")
    for part in ("**Objectives**", "**Prerequisites**", "**Run time:**"):
        assert part in first.source, f"{path.name}: header lacks {part}"
    assert re.search(r"\*\*Run time:\*\* about \d+ s", first.source), "run time must be a figure in seconds"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_errors_on_purpose_are_tagged(path):
    """A cell expected to raise carries the raises-exception tag, and no cell hides errors in a bare except."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"except\s*:", cell.source), f"{path.name}: bare except hides errors"
            assert not re.search(r"except\s+(Base)?Exception\s*:\s*\n\s*pass", cell.source)


# ----------------------------------------------------------------------------------------------- the template


def headings(source: str) -> list[tuple[int, str]]:
    """(level, text) of each markdown heading in ``source``, leaving out lines inside ``` fences."""
    found, fenced = [], False
    for line in source.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6})\s+(.*\S)", line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def code_tree(source: str) -> ast.Module:
    """The cell's code; IPython lines (``%magic``, ``!shell``) are left out."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    return ast.parse("\n".join(lines))


def intro_problems(nb, name: str) -> list[str]:
    """The first cell: the title, then an intro paragraph of prose before **Objectives**."""
    first = nb.cells[0]
    if first.cell_type != "markdown" or not re.match(r"# \d\d \S", first.source):
        return [f"{name} cell 0: must start with '# NN Title'"]
    before, found, _ = first.source.partition("**Objectives**")
    if not found:
        return [f"{name} cell 0: no **Objectives** after the intro"]
    paragraphs = [p.strip() for p in before.split("\n\n")[1:] if p.strip()]
    prose = [p for p in paragraphs if not p.startswith(("-", "*", "#", "|", ">", "```"))]
    if sum(len(p.split()) for p in prose) < INTRO_MIN_WORDS:
        return [
            f"{name} cell 0: between the title and **Objectives** write an intro paragraph "
            f"(at least {INTRO_MIN_WORDS} words of prose: what the notebook is about and why it matters)"
        ]
    return []


def exercise_heading_problems(nb, name: str) -> list[str]:
    """Every heading that names an exercise is a level-2 heading starting '## Exercise'."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for level, text in headings(cell.source):
            if re.search(r"\bexercises?\b", text, re.IGNORECASE) and (level != 2 or not text.startswith("Exercise")):
                problems.append(f"{name} cell {i}: {'#' * level} {text!r} must be a '## Exercise...' heading")
    return problems


def import_style_problems(nb, name: str) -> list[str]:
    """``from labkit import <module>`` / ``from labcheck import <module>`` only, and no ``labkit.x`` attribute use."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(code_tree(cell.source)):
            where = f"{name} cell {i} line {getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        problems.append(f"{where}: 'import {alias.name}': write 'from labkit import <module>'")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                names = [alias.name for alias in node.names]
                if node.module not in PACKAGES:
                    problems.append(
                        f"{where}: 'from {node.module} import {', '.join(names)}': "
                        "write 'from labkit import <module>', then '<module>.name'"
                    )
                elif node.module == "labcheck" and not set(names) <= LABCHECK_MODULES:
                    problems.append(f"{where}: from labcheck import only its modules {sorted(LABCHECK_MODULES)}")
                elif any(alias.asname for alias in node.names):
                    problems.append(f"{where}: no 'as' names for the course's modules")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in PACKAGES:
                problems.append(f"{where}: '{node.value.id}.{node.attr}...': import the module, then call it")
    return problems


def kernel_problems(nb, name: str) -> list[str]:
    spec = nb.metadata.get("kernelspec", {})
    wanted = {"name": "python3", "display_name": KERNEL_DISPLAY_NAME, "language": "python"}
    wrong = {key: spec.get(key) for key, value in wanted.items() if spec.get(key) != value}
    return [f"{name}: kernelspec {wrong} should be {wanted}"] if wrong else []


def long_cell_problems(nb, name: str) -> list[str]:
    return [
        f"{name} cell {i} (id {cell.get('id')}): {n} lines; split it (at most {MAX_CODE_LINES}, "
        "with a short markdown cell saying what the next part does)"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (n := len(cell.source.splitlines())) > MAX_CODE_LINES
    ]


def deadline_loop_problems(nb, name: str) -> list[str]:
    """Waits use wait_until; only the cell that defines it (notebook 02) has a deadline of its own."""
    pattern = re.compile(r"deadline\s*=\s*time\.monotonic\(\)|while\s+[^\n]*time\.monotonic\(\)\s*<\s*deadline")
    return [
        f"{name} cell {i}: a hand-written deadline loop; use process.wait_until(predicate, timeout, describe)"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and pattern.search(cell.source) and "def wait_until(" not in cell.source
    ]


def ending_problems(nb, name: str) -> list[str]:
    """The last headings are ## Summary, ## What's next, ## Resources, after the last code cell; 2-8 links."""
    last_code = max((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), default=-1)
    found = [
        (i, text)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for level, text in headings(cell.source)
        if level == 2
    ]
    tail = [text for _, text in found[-3:]]
    if tail != ["Summary", "What's next", "Resources"]:
        return [f"{name}: the last level-2 headings are {tail}, not ['Summary', \"What's next\", 'Resources']"]
    problems = [
        f"{name} cell {i}: '## {text}' must come after the last code cell (cell {last_code})"
        for i, text in found[-3:]
        if i < last_code
    ]
    start = found[-1][0]
    text = nb.cells[start].source.split("## Resources", 1)[1] + "".join(c.source for c in nb.cells[start + 1 :])
    links = re.findall(r"\[[^\]]+\]\(([^)\s]+)\)", text)
    if not 2 <= len(links) <= 8:
        problems.append(f"{name} cell {start}: '## Resources' has {len(links)} links; list 2 to 8 sources")
    return problems


CHECKS = [
    intro_problems,
    exercise_heading_problems,
    import_style_problems,
    kernel_problems,
    long_cell_problems,
    deadline_loop_problems,
    ending_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_template(path, check):
    problems = check(nbformat.read(path, as_version=4), path.name)
    assert not problems, "\n".join(problems)


def _notebook(*cells, kernel=KERNEL_DISPLAY_NAME):
    """A small notebook: ("md" | "code", source) pairs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": kernel, "language": "python", "name": "python3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells
    ]
    return nb


GOOD_HEADER = (
    "md",
    "# 99 · A test notebook\n\nThis paragraph says what the notebook is about and why it matters to a learner, "
    "in more than twenty words of plain prose.\n\n**Objectives**\n- one\n\n**Prerequisites**\n- none\n\n"
    "**Run time:** about 1 s.",
)
GOOD_END = [
    ("md", "## Summary\n\n- done"),
    ("md", "## What's next\n\nNothing."),
    ("md", "## Resources\n\n- [a](https://prometheus.io/docs/practices/naming/)\n- [b](../labkit/process.py)"),
]


def test_a_notebook_that_follows_the_template_passes():
    nb = _notebook(
        GOOD_HEADER,
        ("code", "from labcheck import checks\nfrom labkit import process, triton\n\nprocess.free_port()"),
        ("md", "## Exercise: something\n\n```bash\n# not a heading\n```"),
        *GOOD_END,
    )
    assert [problem for check in CHECKS for problem in check(nb, "good.ipynb")] == []


@pytest.mark.parametrize(
    "check, cells, expected",
    [
        (intro_problems, [("md", "# 99 · Title\n\n**Objectives**\n- one")], "cell 0: between the title"),
        (intro_problems, [("md", "# 99 · Title\n\nToo short.\n\n**Objectives**")], "at least 20 words"),
        (exercise_heading_problems, [GOOD_HEADER, ("md", "### Exercise: nested")], "cell 1: ### 'Exercise"),
        (exercise_heading_problems, [GOOD_HEADER, ("md", "## Try this exercise")], "cell 1: ## 'Try this exercise'"),
        (import_style_problems, [GOOD_HEADER, ("code", "import labkit.triton")], "cell 1 line 1: 'import labkit"),
        (import_style_problems, [GOOD_HEADER, ("code", "import labkit")], "cell 1 line 1: 'import labkit'"),
        (import_style_problems, [GOOD_HEADER, ("code", "from labkit.triton import start")], "from labkit.triton"),
        (import_style_problems, [GOOD_HEADER, ("code", "x = 1\nlabkit.process.free_port()")], "cell 1 line 2"),
        (import_style_problems, [GOOD_HEADER, ("code", "from labkit import triton as t")], "no 'as' names"),
        (kernel_problems, [GOOD_HEADER], "kernelspec"),
        (long_cell_problems, [GOOD_HEADER, ("code", "x = 1\n" * 36)], "cell 1 (id"),
        (deadline_loop_problems, [GOOD_HEADER, ("code", "deadline = time.monotonic() + 5")], "cell 1: a hand"),
        (ending_problems, [GOOD_HEADER, *GOOD_END[:2]], "the last level-2 headings are"),
        (ending_problems, [GOOD_HEADER, *GOOD_END[:2], ("md", "## Resources\n\n- [a](https://a.b)")], "has 1 links"),
        (ending_problems, [GOOD_HEADER, *GOOD_END, ("code", "x = 1")], "after the last code cell"),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_each_check_can_fail(check, cells, expected):
    kernel = "Python 3" if check is kernel_problems else KERNEL_DISPLAY_NAME
    problems = check(_notebook(*cells, kernel=kernel), "bad.ipynb")
    assert problems and any(expected in p and p.startswith("bad.ipynb") for p in problems), problems


# ---------------------------------------------------------------------- wait_until, shown before it is imported


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def _body_without_docstring(fn: ast.FunctionDef) -> str:
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    return "\n".join(ast.dump(statement) for statement in body)


def test_notebook_02_shows_labkits_wait_until_before_any_import_of_it():
    """Notebook 02 defines wait_until in plain code, with labkit's body; no earlier notebook imports process."""
    nb02 = next(p for p in NOTEBOOKS if p.name.startswith("02_"))
    cells = nbformat.read(nb02, as_version=4).cells
    defining = [c.source for c in cells if c.cell_type == "code" and "def wait_until(" in c.source]
    assert len(defining) == 1, f"{nb02.name}: one code cell must define wait_until in plain code"
    shown = _function(code_tree(defining[0]), "wait_until")
    labkit_source = (Path(paths.ROOT) / "labkit" / "process.py").read_text()
    assert _body_without_docstring(shown) == _body_without_docstring(
        _function(ast.parse(labkit_source), "wait_until")
    ), f"{nb02.name}: its wait_until differs from labkit/process.py's: keep the two the same"
    for path in NOTEBOOKS:
        if path.name < nb02.name:
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
            assert "wait_until" not in text, f"{path.name} uses wait_until before notebook 02 shows it"
