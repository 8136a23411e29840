"""Lesson 08 (diagnose your model): its claims read back from the recorded findings, with the default
parameters, with the defaults written out ("" for the model, the data's path spelt in full, seed 1), and on a
model unlike the default one (an .h5 regression MLP whose BN statistics are current), plus its refusal of paths
that are not files of the right kind.

The notebook's checks test the tool's behaviour on copies of whatever model it is given (they fail the run if the
tool misbehaves); these tests pin down which branch each check took on the two models, so a check that quietly
stopped running (skipped, inconclusive) shows up here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.diagnose import BATCH1_TOLERANCE, DEFAULT_DATA, DEFAULT_MODEL, GAP_THRESHOLD, IMPROVEMENT_SE
from helpers.workbook.findings import REPO_ROOT, build_dir, findings_path
from helpers.workbook.notebooks import execute, notebook_path
from notebook_runs import run_findings

STEM = "08_diagnose_your_model"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / f"{STEM}.ipynb"


def _run(root: Path, parameters: dict) -> dict:
    result = execute(notebook_path(STEM), root / "notebooks" / f"{STEM}.ipynb", parameters=parameters, build_dir=root)
    if not result.ok:
        pytest.fail(f"{STEM} with {parameters} failed in cell {result.failed_cell}: {result.error}")
    return json.loads(findings_path(STEM, root).read_text())


@pytest.fixture(scope="module")
def explicit_defaults():
    """The notebook run with model_path="" (empty = the default) and data_path spelt out, seed 1."""
    return _run(build_dir() / "test-runs" / "08-explicit-defaults",
                {"seed": 1, "model_path": "", "data_path": str(DEFAULT_DATA)})


@pytest.fixture(scope="module", params=["default", "explicit"])
def run(request, explicit_defaults):
    return run_findings(STEM, 0) if request.param == "default" else explicit_defaults


# a user's model unlike the default: Keras's legacy .h5 format, regression (float targets, compiled with MSE),
# Dense-BN blocks whose statistics were recomputed after training (nothing stale to find)
BUILD_REGRESSOR = r'''
import sys
import numpy as np, keras
from helpers.batchnorm import precise_bn
out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (1200, 8)).astype("float32")
y = (np.sin(3 * x[:, :1]) + x[:, 1:2] ** 2 - x[:, 2:3]).astype("float32")
keras.utils.set_random_seed(0)
inputs = keras.Input((8,))
h = inputs
for width in (32, 32):
    h = keras.layers.Dense(width, use_bias=False)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
model = keras.Model(inputs, keras.layers.Dense(1)(h))
model.compile(optimizer="adam", loss="mse")
model.fit(x[:1000], y[:1000], epochs=10, batch_size=32, verbose=0)
precise_bn(model, x[:1000])
model.save(f"{out}/regressor.h5")
np.savez(f"{out}/regression.npz", x_train=x[:1000], y_train=y[:1000], x_test=x[1000:], y_test=y[1000:])
'''


@pytest.fixture(scope="module")
def regressor():
    """The notebook run (seed 0) on the .h5 regression model above."""
    root = build_dir() / "test-runs" / "08-h5-regressor"
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", BUILD_REGRESSOR, str(files)], check=True, cwd=REPO_ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return _run(root, {"seed": 0, "model_path": str(files / "regressor.h5"), "data_path": str(files / "regression.npz")})


def test_empty_string_means_the_default_example(explicit_defaults):
    assert explicit_defaults["parameters"]["model_path"] == str(DEFAULT_MODEL)
    assert explicit_defaults["parameters"]["data_path"] == str(DEFAULT_DATA)
    assert explicit_defaults["findings"]["using_default_example"] is True


def test_default_example_is_stale_and_the_fix_helps_when_scored_independently(run):
    f = run["findings"]
    assert f["bn_layers"] == 3
    assert f["bn_stale"] is True and f["max_layer_error_p90"] > 0.1
    assert f["metric_recomputed"] > f["metric_as_stored"] + 0.5
    # the copy diag.fix wrote, scored by the notebook's own code: the tool's number, and far beyond the noise
    assert f["fix_written"] is True
    assert f["fix_metric_mine"] == pytest.approx(f["metric_recomputed"], abs=0.006)   # at most 2 of 359 differ
    assert f["fix_change_mine"] > 10 * IMPROVEMENT_SE * f["fix_change_se_mine"]
    assert f["fix_statistics_gap"] < 0.01


def test_the_corrupted_layer_is_named_alone(run):
    f = run["findings"]
    assert f["culprit_check"] == "ran"
    assert f["culprit_corrupted_layer"] == "norm1"          # the middle one of the three
    assert f["culprit_worst_layer"] == "norm1" and f["culprit_off_layers"] == "norm1"


def test_data_times_255_is_input_scale_not_stale(run):
    f = run["findings"]
    assert f["input_scale_check"] == "ran"                    # digits are in [0, 1]
    assert f["input_scale_found"] is True and f["input_scale_rescaling"] == "x / 255"
    assert f["input_scale_bn_stale"] is False and f["input_scale_fix_refused"] is True


def test_untrained_copies(run):
    f = run["findings"]
    assert f["untrained_check"] == "ran"
    # a re-initialized CNN with exact BN statistics may beat chance a little: the tool must agree with the page
    assert f["untrained_found"] == f["untrained_mine"]
    assert f["untrained_metric_stored"] < 0.3 and f["untrained_chance"] < 0.2
    # a copy that ignores its input and says the best constant is untrained whatever the seed
    assert f["constant_copy_check"] == "ran" and f["constant_copy_untrained_found"] is True


def test_batch1_gap_and_noise(run):
    f = run["findings"]
    assert f["batch1_max_abs_diff"] < BATCH1_TOLERANCE and f["batch1_max_abs_diff_mine"] < BATCH1_TOLERANCE / 10
    assert f["batch1_verdict_mine"] == "match"
    assert f["batch1_constant_layers"] == 1       # norm_dense; the two conv BN layers average over space
    mismatch = f["gap_train_training_mode"] - f["gap_train_inference_mode"]
    overfit = f["gap_train_inference_mode"] - f["gap_test_inference_mode"]
    assert mismatch > 0.5 > overfit
    assert f["mode_mismatch_mine"] == pytest.approx(mismatch, abs=0.05) and f["gap_verdict_mine"] == "mismatch"
    assert abs(f["fixed_mode_mismatch"]) < GAP_THRESHOLD
    assert f["noise_formula_matches"] is True
    assert f["b_simple"] is None or f["b_simple"] > 0


def test_timestep_codes_and_callback(run):
    f = run["findings"]
    assert f["timestep_code_none"] == "timestep_no_weights"
    assert f["timestep_code_per_series"] == "timestep_class_weight_trap"
    assert f["timestep_code_per_step"] == "timestep_weights_ok"
    assert f["example_class_weight_loss_rel_diff"] > 0.1 and 0 < f["example_positive_fraction"] < 0.05
    assert f["callback_batches"] == 45                        # 1438 digits in batches of 32, one epoch
    assert "bn_stale" in f["callback_codes"].split(",") and f["callback_recomputed"] is True


def test_the_command_line_agrees(run):
    f = run["findings"]
    assert f["cli_exit_status"] == 1                          # --fail-on error, and bn_stale is an error
    assert f["cli_fix_written"] is True and f["cli_codes_match"] is True


def test_an_h5_regression_model_with_current_statistics(regressor):
    f = regressor["findings"]
    assert f["using_default_example"] is False and f["bn_layers"] == 2
    assert "bn_current" in f["codes"].split(",")
    assert f["bn_stale"] is False and f["max_layer_error_p90"] < 0.01
    # The fix rule is "better by more than 2 paired standard errors", with no minimum size: on a continuous metric a
    # negligible but consistent change can pass it, so the tool may write a copy of statistics it calls current. The
    # notebook checked that copy against its own scoring; here: whatever was written changes the MSE negligibly.
    assert abs(f["fix_change_mine"]) < 1e-3 * f["metric_as_stored"]
    assert f["fix_written"] == (f["fix_change_mine"] > IMPROVEMENT_SE * f["fix_change_se_mine"])
    assert f["culprit_check"] == "ran" and f["culprit_worst_layer"] == f["culprit_corrupted_layer"]
    assert f["input_scale_check"] == "ran" and f["input_scale_found"] is True
    assert f["constant_copy_untrained_found"] is True
    assert f["batch1_constant_layers"] == 2                   # both BN layers follow a Dense layer
    assert f["cli_exit_status"] == 0 and f["cli_fix_written"] == f["fix_written"] and f["cli_codes_match"] is True


@pytest.mark.parametrize("name, value", [
    ("model_path", "/nonexistent/model.keras"),
    ("data_path", "/nonexistent/data.npz"),
    ("model_path", str(Path(__file__).resolve().parent)),      # a directory
    ("model_path", str(DEFAULT_DATA)),                          # a file of the wrong kind
    ("data_path", str(DEFAULT_MODEL)),
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
    setup = "".join(code[1]["source"])
    assert 'ExistingFile(".keras|.h5"' in setup               # both formats the command line reads
