"""Lesson 02 (BN with tiny batches): the recorded findings on seeds 0-2, and bad parameters."""
import math

import pytest
from notebook_runs import SEEDS

STEM = "02_batchnorm_small_batches"


@pytest.mark.parametrize("seed", SEEDS)
def test_estimator_bias(findings, seed):
    f = findings(STEM, seed)
    assert abs(f["variance_ratio_m2"] - 0.5) <= 0.03
    assert abs(f["variance_ratio_m4"] - 0.75) <= 0.03
    assert abs(f["corrected_variance_ratio_m2"] - 1.0) <= 0.06
    # same-class batches lose variance beyond (m-1)/m, even at m=64
    assert f["variance_ratio_correlated_m64"] < 0.9 * (63 / 64)
    assert 0.6 <= f["sd_batch_mean_m2"] <= 0.8  # ~ 1/sqrt(2)


@pytest.mark.parametrize("seed", SEEDS)
def test_keras_matches_reference_and_stores_biased_variance(findings, seed):
    f = findings(STEM, seed)
    assert f["keras_stores_biased_variance"] is True
    assert f["max_abs_diff_numpy_vs_keras"] <= 1e-5


@pytest.mark.parametrize("seed", SEEDS)
def test_correlated_batches_break_bn_not_groupnorm(findings, seed):
    f = findings(STEM, seed)
    assert f["acc_gn_correlated_b2"] - f["acc_bn_correlated_b2"] >= 0.30
    assert f["acc_bn_iid_b2"] - f["acc_bn_correlated_b2"] >= 0.30
    # precise BN does not rescue the damaged weights; renorm sits between BN and GN
    assert f["acc_precise_bn_correlated_b2"] <= f["acc_gn_correlated_b2"] - 0.30
    assert f["acc_bn_correlated_b2"] < f["acc_renorm_correlated_b2"] < f["acc_gn_correlated_b2"]


@pytest.mark.parametrize("seed", SEEDS)
def test_iid_small_batches_and_warm_up(findings, seed):
    f = findings(STEM, seed)
    assert f["acc_precise_bn_iid_b2"] >= 0.80
    # i.i.d. pairs cost BN a few points even with exact statistics
    assert f["acc_precise_bn_iid_b32"] - f["acc_precise_bn_iid_b2"] >= 0.02
    assert f["acc_bn_iid_b2_train_mode"] < f["acc_bn_iid_b2"]
    # batch 32 as trained measures warm-up of the moving averages, not batch size
    assert f["acc_precise_bn_iid_b32"] - f["acc_bn_iid_b32"] >= 0.15
    # the Bessel correction with the right count per layer changes little; x m/(m-1) everywhere does not help
    assert abs(f["acc_bn_iid_b2_variance_corrected_per_layer"] - f["acc_bn_iid_b2"]) <= 0.05
    assert f["acc_bn_iid_b2_variance_corrected"] <= f["acc_bn_iid_b2"] + 0.02


@pytest.mark.parametrize("seed", SEEDS)
def test_widget_latency(findings, seed):
    f = findings(STEM, seed)
    assert f["widget_estimator_median_s"] <= 0.3


@pytest.mark.parametrize("bad", [
    {"epochs": 0},
    {"mc_trials": -5},
    {"learning_rate": "abc"},
    {"learning_rate": math.nan},
    {"batch_sizes": 2},
    {"batch_sizes": [2, 4, 8]},  # lacks 32
])
def test_bad_parameters_fail_in_setup(rejected, bad):
    rejected(STEM, bad)
