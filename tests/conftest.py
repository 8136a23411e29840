"""Shared fixtures; the machinery lives in notebook_runs.py (importable by test modules
as `from notebook_runs import SEEDS`: a module named conftest is ambiguous, since
tests/browser has its own)."""
from __future__ import annotations

import nbval.kernel
import pytest

from helpers.workbook.notebooks import retrying_kernel_start
from notebook_runs import run_findings, run_rejected, start_prefetch, stop_prefetch

# nbval's kernels, like execute()'s, are started again when one dies before answering (its ports
# were taken meanwhile: several kernels and a browser start at once during `make test`)
if not getattr(nbval.kernel.start_new_kernel, "_retrying", False):
    nbval.kernel.start_new_kernel = retrying_kernel_start(nbval.kernel.start_new_kernel)


def pytest_collection_finish(session):
    """Start the other seeds' notebook runs in the background while nbval runs (see notebook_runs)."""
    if not session.config.getoption("collectonly"):
        start_prefetch(session.items)


def pytest_sessionfinish(session):
    stop_prefetch()


@pytest.fixture(scope="session")
def findings():
    """findings(stem, seed) -> {name: value} for that run."""
    return lambda stem, seed: run_findings(stem, seed)["findings"]


@pytest.fixture
def rejected(tmp_path):
    """rejected(stem, {name: bad value}) -> the error message; asserts it names the parameter."""
    def check(stem: str, parameters: dict) -> str:
        result, _ = run_rejected(stem, parameters, tmp_path)
        name = next(iter(parameters))
        assert repr(name) in result.error or name in result.error, result.error
        assert "expected" in result.error, result.error
        return result.error
    return check
