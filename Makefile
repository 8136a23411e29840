# One obvious command per job. Every target sets up .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Tests write their executed notebooks and findings here, not over `make run`'s build/.
TEST_BUILD := build/test

.PHONY: setup run test lab bench data clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# Extra arguments for run: `make run ARGS="01 03"` (some notebooks), `make run ARGS="-p seed 1"`.
ARGS ?=

run: $(STAMP)
	$(PY) -m helpers.workbook.run_all $(ARGS)

# Regenerate the committed data with provenance, every table in order (python -m helpers.workbook.regenerate --list
# names them and each one's own command): lesson 08's example (data/examples/), lesson 02's data/mnist1d_runs.csv and
# data/tiny_batch_runs.csv, lesson 03's data/mnist1d_inference_03.csv, lesson 04's data/long_runs.csv, lesson 05's
# data/converged_05.csv, then lesson 07's per-step logs and snapshots, data/spike_runs/, its runs from the first step,
# data/spike_runs/from_scratch/ (which read the b runs the step before writes), and its check of the stand-in against
# 2 x LSTM(64), data/spike_runs/from_scratch_lstm64/.
data: $(STAMP)
	$(PY) -m helpers.workbook.regenerate all

test: $(STAMP)
	WORKBOOK_BUILD_DIR=$(CURDIR)/$(TEST_BUILD) $(PY) -m pytest --durations=25 --nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks tests

# The kernelspec "python3" inside JupyterLab is this .venv's interpreter, whatever the user has installed.
lab: $(STAMP)
	JUPYTER_PATH="$$($(PY) -c 'from helpers.workbook.notebooks import kernelspec_dir; print(kernelspec_dir())')$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	  $(VENV)/bin/jupyter lab --notebook-dir=notebooks

# `make bench ARGS=--strict` exits non-zero when a budget is not met.
bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf build .build-* .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
