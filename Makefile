# One obvious command per job. Every target sets up .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Tests write their executed notebooks and findings here, not over `make run`'s build/.
TEST_BUILD := build/test

.PHONY: setup run test lab bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m helpers.workbook.run_all

test: $(STAMP)
	WORKBOOK_BUILD_DIR=$(CURDIR)/$(TEST_BUILD) $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf build .build-staging-* .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
