"""Lesson 03 (BN in training vs inference): the recorded findings on several seeds,
and bad parameters rejected in the setup cell."""
from __future__ import annotations

import math

import pytest

from notebook_runs import SEEDS

STEM = "03_batchnorm_train_vs_inference"


@pytest.mark.parametrize("seed", SEEDS)
def test_inference_mode_ignores_the_batch(findings, seed):
    f = findings(STEM, seed)
    assert f["max_abs_diff_batch1_vs_batch256_inference"] <= 1e-5
    assert f["max_abs_diff_predict_vs_call_inference"] <= 1e-5
    assert f["max_abs_diff_batch1_vs_batch256_training"] >= 0.1


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_of_one_in_training_mode(findings, seed):
    f = findings(STEM, seed)
    assert f["dense_bn_batch1_outputs_beta"] is True
    assert f["conv_bn_batch1_outputs_constant"] is False
    assert f["conv_bn_batch1_vs_instance_norm_max_abs_diff"] <= 1e-4
    assert f["training_mode_batch1_prediction_spread"] <= 1e-5


@pytest.mark.parametrize("seed", SEEDS)
def test_the_accepted_answer_loses_to_inference_mode(findings, seed):
    f = findings(STEM, seed)
    worst = max(f["acc_bn_removed"], f["acc_training_mode_batch1"])
    assert f["acc_inference_mode"] - worst >= 0.25
    assert f["acc_inference_mode"] >= 0.85
    assert abs(f["acc_predict"] - f["acc_inference_mode"]) <= 1e-9
    assert f["acc_instance_norm_batch1"] <= f["acc_inference_mode"] - 0.2
    assert f["acc_training_mode_batch256"] >= f["acc_training_mode_batch1"]


@pytest.mark.parametrize("seed", SEEDS)
def test_moving_average_fragility_and_its_fixes(findings, seed):
    f = findings(STEM, seed)
    assert f["bn_momentum_099_acc_after_5_epochs"] <= 0.65
    assert f["training_mode_acc_after_5_epochs"] >= f["bn_momentum_099_acc_after_5_epochs"] + 0.15
    assert f["bn_momentum_09_acc_final"] >= 0.85
    assert f["bn_momentum_099_acc_precise_bn"] >= 0.85
    assert f["fit_logged_acc_momentum_099_epoch5"] - f["evaluate_acc_momentum_099_epoch5"] >= 0.2


@pytest.mark.parametrize("seed", SEEDS)
def test_deployment_and_keras_semantics(findings, seed):
    f = findings(STEM, seed)
    assert f["max_abs_diff_fold_by_hand"] <= 1e-4
    assert f["max_abs_diff_folded_vs_original"] <= 1e-4
    assert f["max_abs_diff_stream_vs_batch"] <= 1e-5
    assert f["max_abs_diff_export_vs_inference"] <= 1e-5
    assert f["frozen_bn_training_true_vs_inference_max_abs_diff"] <= 1e-5
    assert f["frozen_bn_moving_statistics_change"] == 0.0
    assert f["subclassed_propagated_batch_diff"] <= 1e-5
    assert f["subclassed_propagated_training_batch_diff"] >= 0.1
    assert f["bn_dense_variance_error_after_training_mode_stream"] >= 0.85
    assert (f["confident_share_after_training_mode_stream"]
            >= f["confident_share_before_training_mode_stream"] + 0.4)


@pytest.mark.parametrize("seed", SEEDS)
def test_adabn_recovers_from_sensor_drift(findings, seed):
    f = findings(STEM, seed)
    assert f["acc_drift_frozen_stats"] <= f["acc_no_drift_second_half"] - 0.2
    assert f["acc_drift_adabn"] >= f["acc_no_drift_second_half"] - 0.05


@pytest.mark.parametrize("parameters", [
    {"n_windows": 0},
    {"epochs": -1},
    {"channels": "abc"},
    {"train_batch_size": math.nan},
    {"window_length": 8},
    {"epochs": [5, 10]},
    {"train_batch_size": 512, "n_windows": 500},
    {"n_windows": 20_000, "epochs": 50},
    {"train_batch_size": 2, "epochs": 50},
], ids=["zero", "negative", "string", "nan", "too-short", "list", "batch-over-train-size",
        "too-costly-readings", "too-costly-steps"])
def test_bad_parameters_fail_in_setup(rejected, parameters):
    message = rejected(STEM, parameters)
    name, value = next(iter(parameters.items()))
    assert name in message
