"""Lesson 07 (diagnose your model): its claims read back from the recorded findings, with the default
parameters and with the defaults written out ("" for the model, the data's path spelt in full, seed 1),
and its refusal of paths that are not files of the right kind."""
import json
from pathlib import Path

import pytest

from helpers.diagnose import DEFAULT_DATA, DEFAULT_MODEL, STALE_METRIC_CHANGE, STALE_VARIANCE_ERROR
from helpers.workbook.findings import build_dir, findings_path
from helpers.workbook.notebooks import execute, notebook_path
from notebook_runs import run_findings

STEM = "07_diagnose_your_model"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / f"{STEM}.ipynb"


@pytest.fixture(scope="module")
def explicit_defaults():
    """The notebook run with model_path="" (empty = the default) and data_path spelt out, seed 1."""
    root = build_dir() / "test-runs" / "07-explicit-defaults"
    result = execute(notebook_path(STEM), root / "notebooks" / f"{STEM}.ipynb",
                     parameters={"seed": 1, "model_path": "", "data_path": str(DEFAULT_DATA)}, build_dir=root)
    if not result.ok:
        pytest.fail(f"{STEM} with explicit defaults failed in cell {result.failed_cell}: {result.error}")
    return json.loads(findings_path(STEM, root).read_text())


@pytest.fixture(scope="module", params=["default", "explicit"])
def run(request, explicit_defaults):
    return run_findings(STEM, 0) if request.param == "default" else explicit_defaults


def test_empty_string_means_the_default_example(explicit_defaults):
    assert explicit_defaults["parameters"]["model_path"] == str(DEFAULT_MODEL)
    assert explicit_defaults["parameters"]["data_path"] == str(DEFAULT_DATA)
    assert explicit_defaults["findings"]["using_default_example"] is True


def test_default_example_is_stale_and_recomputing_fixes_it(run):
    f = run["findings"]
    assert f["bn_layers"] == 3
    assert f["bn_stale"] is True and f["max_relative_variance_error"] > STALE_VARIANCE_ERROR
    assert f["metric_recomputed"] > f["metric_as_stored"] + STALE_METRIC_CHANGE
    assert f["fixed_stale"] is False
    assert f["fixed_metric_as_stored"] == pytest.approx(f["metric_recomputed"], abs=1e-9)


def test_gap_is_mode_mismatch_until_the_statistics_are_recomputed(run):
    f = run["findings"]
    mismatch = f["gap_train_training_mode"] - f["gap_train_inference_mode"]
    overfit = f["gap_train_inference_mode"] - f["gap_test_inference_mode"]
    assert mismatch > 0.5 > overfit
    assert abs(f["fixed_mode_mismatch"]) < 0.1 * mismatch


def test_batch1_and_the_constant_dense_bn(run):
    f = run["findings"]
    assert f["batch1_max_abs_diff"] < 1e-4
    assert f["batch1_constant_layers"] == 1       # norm_dense; the two conv BN layers average over space


def test_noise_scale_grows_with_training_and_timestep_trap(run):
    f = run["findings"]
    assert f["b_simple_initialization"] > 0
    assert f["b_simple_trained"] is None or f["b_simple_trained"] > 2 * f["b_simple_initialization"]
    s = f["suggested_max_batch_initialization"]
    assert s <= f["b_simple_initialization"] < 2 * s
    assert f["example_class_weight_trap"] is True and f["example_class_weight_loss_rel_diff"] > 0.1
    assert 0 < f["example_positive_fraction"] < 0.05


@pytest.mark.parametrize("name, value", [
    ("model_path", "/nonexistent/model.keras"),
    ("data_path", "/nonexistent/data.npz"),
    ("model_path", str(Path(__file__).resolve().parent)),      # a directory
    ("data_path", str(DEFAULT_MODEL)),                          # a file of the wrong kind
    ("model_path", 3),
])
def test_bad_paths_are_rejected_in_setup(rejected, name, value):
    message = rejected(STEM, {name: value})
    assert "expected a path to an existing" in message


def test_notebook_is_committed_clean_with_default_parameters():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = "".join(code[0]["source"])
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert 'model_path = ""' in params and 'data_path = ""' in params
