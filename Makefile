# The course's commands. Each target sets up .venv itself first.
#   make lab    JupyterLab on notebooks/
#   make test   ruff + unit tests + integration tests on a real Triton + every notebook (nbmake), on 2 workers
#   make run    execute every notebook headless into build/run/ and render each to HTML
#   make book   the course book, a static site with navigation and search, in build/book/html/
#   make run-times  rewrite each notebook header's run time from the last `make test` (a report, not a test)
#   make setup  only create .venv with the pinned requirements
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# make test: test files (and notebooks) run on this many workers at once (pytest-xdist), each its own file;
# every server binds its own free 127.0.0.1 ports, so they do not collide. TEST_WORKERS=0 runs them one by one.
TEST_WORKERS ?= 2
LAB_ARGS ?=

.PHONY: setup lab test lint unit run clean bench tools book

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else "Python 3.10-3.12 is needed, this is %d.%d; run: make PYTHON=python3.12 ..." % v)'
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "$(PYTHON) cannot create $(VENV): its ensurepip module is missing. On Debian/Ubuntu install it with:" >&2; \
	  echo "  sudo apt-get install python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# JupyterLab on 127.0.0.1 only; as root (a container, some Codespaces) it needs --allow-root
lab: setup
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS) notebooks/

# The course book: a static site in build/book/html/ (README, every notebook with its outputs, the guides).
# Outputs come from build/run/ (make run) where current, else each notebook is executed once.
# BOOK_ARGS=--no-execute shows notebooks without outputs instead.
book: setup tools
	$(BIN)/python scripts/build_book.py $(BOOK_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# prometheus + promtool (notebook 05 on, and the metric-name lint): installed with apt when
# missing and running as root (CI, Codespaces); otherwise the command to run is printed.
tools:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	else \
	  echo "prometheus/promtool not found. Install: sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"; \
	fi

test: setup lint tools
	$(BIN)/python -m pytest -v -rs --durations=15 -n $(TEST_WORKERS) --dist loadfile --nbmake --nbmake-timeout=600 tests notebooks $(PYTEST_ARGS)

run: setup
	$(BIN)/python scripts/run_notebooks.py

unit: setup
	$(BIN)/python -m pytest -v -m "not integration" tests

# What custom metrics cost a Python model: per-call cost, then throughput and latency of the
# same model without metrics, with per-request calls and with the recommended pattern, then digits_classifier with its metrics off and on (~2.5 min).
# Prints a table, then one JSON line. BENCH_ARGS passes options: make bench BENCH_ARGS="--cycles 10"
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache

# Each notebook header's "Run time: about N s" is a measurement: `make test` prints it beside the time it
# measured and writes build/run_times.json; this rewrites the headers from that file (rounded to 5 s).
.PHONY: run-times
run-times: setup
	$(BIN)/python scripts/update_run_times.py
