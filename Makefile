# The course's commands. Each target sets up .venv itself first.
#   make lab    JupyterLab on notebooks/
#   make test   ruff + unit tests + integration tests on a real Triton + every notebook (nbmake)
#   make run    execute every notebook headless into build/run/ and render each to HTML
#   make setup  only create .venv with the pinned requirements
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup lab test lint unit run clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else "Python 3.10-3.12 is needed, this is %d.%d; run: make PYTHON=python3.12 ..." % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab notebooks/

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest -v -rs --durations=15 --nbmake --nbmake-timeout=600 tests notebooks $(PYTEST_ARGS)

run: setup
	$(BIN)/python scripts/run_notebooks.py

unit: setup
	$(BIN)/python -m pytest -v -m "not integration" tests

clean:
	rm -rf $(VENV) build .pytest_cache
