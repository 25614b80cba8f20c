# The two commands of the README:
#   make lab    set everything up, open JupyterLab on the first notebook
#   make test   set everything up, run every check (lint, unit tests, notebooks under nbval,
#               the notebooks and the dashboard in JupyterLab and Notebook 7 through headless Chromium)
# Both start from a machine with nothing installed but python3.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# First and pinned: a CPU wheel of this version lies on the machines; a bare `torch` pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
FIRST_NOTEBOOK := notebooks/01_quickstart.ipynb
# Jupyter refuses to run as root unless told; CI and these machines run as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout 300

.PHONY: setup lab test lint unit notebooks browser chromium bench execute-notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	# torchmtl 0.1.9 for the migration cross-checks; --no-deps because it pins networkx<3.
	$(BIN)/pip install --quiet --no-deps torchmtl==0.1.9
	touch $@

setup: $(VENV)/.installed

lab: setup
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(FIRST_NOTEBOOK)

test: setup lint chromium
	$(BIN)/pytest tests notebooks $(NBVAL)

# The browser tests drive Debian's Chromium; Playwright's own download does not work on these machines.
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else echo "the browser tests need Chromium: sudo apt-get install -y chromium"; exit 1; fi; }

browser: setup chromium
	$(BIN)/pytest tests/browser

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: setup
	$(BIN)/pytest tests --ignore=tests/browser

notebooks: setup
	$(BIN)/pytest notebooks $(NBVAL)

# Re-run every notebook in place, so that committed outputs are fresh (what nbval compares against).
execute-notebooks: setup
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=300 notebooks/*.ipynb

bench: setup
	$(BIN)/pip install --quiet "torchjd[cagrad,nash-mtl]==0.18.0"
	$(BIN)/python benchmarks/bench_graph.py
	$(BIN)/python benchmarks/bench_weighting.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache ci-artifacts
