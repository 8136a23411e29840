"""Notebook runs shared by the findings tests: findings per seed, produced once per test session.

`make test` runs nbval over notebooks/ first (default parameters, seed 0),
which writes findings to $WORKBOOK_BUILD_DIR/findings/. The findings fixture
reuses those for seed 0 when they were written during this session, and runs
papermill for any other seed (or when the nbval run is absent), so each
notebook is executed as few times as the claims need.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helpers.workbook.findings import build_dir, findings_path
from helpers.workbook.notebooks import execute, notebook_path

SESSION_START = time.time()
DEFAULT_SEED = 0
SEEDS = (0, 1, 2)

_cache: dict[tuple[str, int], dict] = {}


def _fresh_default_run(stem: str) -> dict | None:
    path = findings_path(stem, build_dir())
    if not path.exists() or path.stat().st_mtime < SESSION_START:
        return None
    doc = json.loads(path.read_text())
    return doc if doc.get("seed") == DEFAULT_SEED else None


def _record_seconds(stem: str, seed: int, seconds: float) -> None:
    """Keep each papermill run's wall time in <build>/test-runs/seconds.json (for the README's table)."""
    path = build_dir() / "test-runs" / "seconds.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times.setdefault(stem, {})[str(seed)] = round(seconds, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def run_findings(stem: str, seed: int) -> dict:
    """The findings dict of notebook `stem` run with `seed` (other parameters default)."""
    key = (stem, seed)
    if key in _cache:
        return _cache[key]
    doc = _fresh_default_run(stem) if seed == DEFAULT_SEED else None
    if doc is None:
        root = build_dir() / "test-runs" / f"seed-{seed}"
        result = execute(notebook_path(stem), root / "notebooks" / f"{stem}.ipynb",
                         parameters={"seed": seed}, build_dir=root)
        _record_seconds(stem, seed, result.seconds)
        if not result.ok:
            pytest.fail(f"{stem} with seed={seed} failed in cell {result.failed_cell}: {result.error}")
        doc = json.loads(findings_path(stem, root).read_text())
    _cache[key] = doc
    return doc


def run_rejected(stem: str, parameters: dict, tmp_path: Path):
    """Run `stem` with bad `parameters`; return (execution, executed notebook).

    Asserts the run failed in the setup cell with a ParameterError and that the
    source notebook is byte-for-byte unchanged.
    """
    import nbformat
    from helpers.workbook.notebooks import setup_cell_index
    source = notebook_path(stem)
    before = source.read_bytes()
    result = execute(source, tmp_path / f"{stem}.ipynb", parameters=parameters, build_dir=tmp_path / "build")
    assert source.read_bytes() == before, "the source notebook was modified"
    assert not result.ok, f"{stem} accepted bad parameters {parameters}"
    nb = nbformat.read(result.output, as_version=4)
    assert result.failed_cell == setup_cell_index(nb), (
        f"expected the failure in the setup cell ({setup_cell_index(nb)}), got cell {result.failed_cell}: {result.error}")
    assert result.error_name == "ParameterError", result.error
    return result, nb
