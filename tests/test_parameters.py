"""Nothing bad gets through papermill (issue 12 §4), tested on the real notebooks.

* A misspelt parameter name, against every notebook (papermill itself only warns).
* A spread of bad values (too-large ints, ±inf, NaN, True for an int, None, strings, lists where a
  scalar belongs, nested lists, a bad list item with its position, a number for a path) over the notebooks, chosen from
  each notebook's own `parameters` cell so the test follows the lessons as they change.
* The same rejection through the papermill CLI, `make run` (run_all) and the sweep.

Each run stops in the setup cell (a kernel start and the setup cell's imports), and the source
notebook stays byte-for-byte unchanged (run_rejected asserts both).
"""
from __future__ import annotations

import math
import subprocess
import sys

import nbformat
import pytest

from helpers.workbook.notebooks import declared_parameters, notebook_path, notebook_paths, setup_cell_index
from notebook_runs import run_rejected

NOTEBOOKS = notebook_paths()
DECLARED = {p.stem: declared_parameters(p) for p in NOTEBOOKS}


def misspelt(names: list[str]) -> tuple[str, str]:
    """(a declared name, a misspelling of it that is not declared): drop a letter of the longest name."""
    target = max(names, key=len)
    for i in range(len(target) - 1, 0, -1):
        candidate = target[:i] + target[i + 1:]
        if candidate.isidentifier() and candidate not in names:
            return target, candidate
    return target, target + "x"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_misspelt_parameter_name_stops_the_notebook(path, tmp_path):
    names = list(DECLARED[path.stem])
    target, wrong = misspelt(names)
    result, nb = run_rejected(path.stem, {wrong: DECLARED[path.stem][target]}, tmp_path)
    assert f"unknown parameter {wrong!r}" in result.error and f"did you mean {target!r}?" in result.error, \
        result.error
    missing = [n for n in names if repr(n) not in result.error]
    assert not missing, f"the message does not list the allowed names {missing}: {result.error}"
    assert not (tmp_path / "build" / "findings" / f"{path.stem}.json").exists(), "nothing was recorded"


# ---- bad values -----------------------------------------------------------------------------------

def _ints(d):
    return [n for n, v in d.items() if isinstance(v, int) and not isinstance(v, bool)]


def _floats(d):
    return [n for n, v in d.items() if isinstance(v, float)]


def _lists(d, min_len=2):
    return [n for n, v in d.items() if isinstance(v, list) and len(v) >= min_len
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)]


def _texts(d):
    return [n for n, v in d.items() if isinstance(v, str)]


def _scalars(d):
    return [n for n, v in d.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]


# kind -> (which parameters it applies to, the bad value made from the default, the name the message must say)
KINDS = {
    "bad list item": (_lists, lambda v: v[:-1] + ["x"], lambda n, v: f"'{n}[{len(v) - 1}]'"),
    "nested list": (_lists, lambda v: [[v[0]]] + v[1:], lambda n, v: f"'{n}[0]'"),
    "NaN list item": (_lists, lambda v: [v[0], math.nan] + v[2:], lambda n, v: f"'{n}[1]'"),
    "int too large (10**400)": (_ints, lambda v: 10**400, lambda n, v: repr(n)),
    "+inf": (_floats, lambda v: math.inf, lambda n, v: repr(n)),
    "-inf": (lambda d: _floats(d) + _ints(d), lambda v: -math.inf, lambda n, v: repr(n)),
    "NaN": (lambda d: _floats(d) + _ints(d), lambda v: math.nan, lambda n, v: repr(n)),
    "True for an int": (_ints, lambda v: True, lambda n, v: repr(n)),
    "None": (_scalars, lambda v: None, lambda n, v: repr(n)),
    "a string for a number": (lambda d: _ints(d) + _floats(d), lambda v: "abc", lambda n, v: repr(n)),
    "a list for a scalar": (_scalars, lambda v: [v], lambda n, v: repr(n)),
    "a number for a string": (_texts, lambda v: 1, lambda n, v: repr(n)),
}


def spread() -> list[tuple[str, str, dict, str]]:
    """(notebook, kind, parameters, name the message must contain): each kind once, on the notebook
    with the fewest cases so far among those that have a parameter of the right type, preferring a
    parameter other than the seed."""
    load = {stem: 0 for stem in DECLARED}
    cases = []
    for kind, (applies, make, named) in KINDS.items():
        candidates = [(load[stem], i, stem) for i, stem in enumerate(DECLARED) if applies(DECLARED[stem])]
        if not candidates:
            continue
        _, _, stem = min(candidates)
        names = applies(DECLARED[stem])
        name = next((n for n in names if n != "seed"), names[0])
        default = DECLARED[stem][name]
        cases.append((stem, kind, {name: make(default)}, named(name, default)))
        load[stem] += 1
    return cases


CASES = spread()


def test_the_spread_covers_every_kind_of_bad_value():
    assert {kind for _, kind, _, _ in CASES} == set(KINDS), "a kind of bad value has no notebook to try it on"


@pytest.mark.parametrize("stem, kind, parameters, named", CASES, ids=[f"{s}-{k}" for s, k, _, _ in CASES])
def test_a_bad_value_stops_the_notebook_in_its_setup_cell(stem, kind, parameters, named, tmp_path):
    result, _ = run_rejected(stem, parameters, tmp_path)
    assert named in result.error, f"{kind}: the message does not name {named}: {result.error}"
    assert "expected" in result.error and "not allowed" in result.error, result.error


# ---- the same through the papermill CLI, make run and the sweep ------------------------------------

STEM = "00_start_here"


def _error_in_setup(output) -> str:
    nb = nbformat.read(output, as_version=4)
    outputs = nb.cells[setup_cell_index(nb)].outputs
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert errors, "the setup cell did not fail"
    return f"{errors[0]['ename']}: {errors[0]['evalue']}"


def test_the_papermill_command_line_stops_a_misspelt_name(tmp_path):
    source = notebook_path(STEM)
    before = source.read_bytes()
    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(source), str(out), "--cwd", str(source.parent),
                           "-p", "logical_device", "3"], capture_output=True, text=True,
                          env={**__import__("os").environ, "WORKBOOK_BUILD_DIR": str(tmp_path / "build")})
    assert proc.returncode != 0, "papermill exited 0 with a misspelt parameter"
    assert source.read_bytes() == before
    error = _error_in_setup(out)
    assert error.startswith("ParameterError: unknown parameter 'logical_device'") and "'logical_devices'" in error


def test_make_run_reports_a_bad_value_as_a_failed_notebook(tmp_path):
    from helpers.workbook.run_all import run_all
    source = notebook_path(STEM)
    before = source.read_bytes()
    rows = run_all([source], tmp_path / "build", parameters={"seed": True}, log=lambda *a, **k: None)
    assert source.read_bytes() == before
    assert rows[0]["status"] == "FAILED" and rows[0]["error"].startswith("ParameterError: parameter 'seed' = True")
    assert "ParameterError" in _error_in_setup(tmp_path / "build" / "notebooks" / source.name)


def test_a_sweep_records_a_bad_value_as_a_failed_run_not_as_applied(tmp_path):
    from helpers.workbook.sweep import sweep
    rows, csv_path = sweep(notebook_path(STEM), {"seed": [10**400]}, root=tmp_path)
    assert rows[0]["status"] == "failed" and rows[0]["findings"] == {}
    assert rows[0]["error"].startswith("ParameterError: parameter 'seed' = 1000"), rows[0]["error"]
    row = csv_path.read_text().splitlines()[1]
    assert ",failed," in row and "ParameterError" in row, row
