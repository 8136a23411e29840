"""Lesson 05: the claims the notebook records, on seeds 0-2, and its parameter checks."""
import math

import pytest

from notebook_runs import SEEDS

STEM = "05_multi_device_gradient_averaging"


@pytest.mark.parametrize("seed", SEEDS)
def test_recorded_relations(findings, seed):
    f = findings(STEM, seed)
    # exact equivalence, and its limit
    assert f["max_abs_diff_2x_b_vs_1x_2b"] <= 1e-5
    assert f["max_abs_diff_4x_vs_2x"] <= 1e-5
    assert f["max_abs_diff_uneven_64_63"] > 100 * f["max_abs_diff_2x_b_vs_1x_2b"]
    assert f["max_abs_diff_custom_loop_vs_fit"] <= 1e-5
    assert f["max_abs_diff_sum_vs_scaled_mean"] <= 1e-5
    # fewer steps at a fixed rate; the linear rule recovers at least half of the gap
    assert f["acc_k4_fixed_lr"] < f["acc_k1_fixed_lr"]
    gap = f["acc_k1_fixed_lr"] - f["acc_k4_fixed_lr"]
    assert f["acc_k4_linear_scaling_warmup"] - f["acc_k4_fixed_lr"] >= 0.5 * gap
    assert abs(f["acc_k4_same_global_batch"] - f["acc_k1_fixed_lr"]) <= 0.02
    # the tutorial in miniature, 3 seeds from this seed on: equal epochs lose, equal steps do not
    assert f["acc_gap_equal_epochs_mean"] > 0
    assert f["acc_gap_equal_epochs_mean"] > f["acc_gap_equal_steps_mean"]
    assert abs(f["acc_gap_equal_steps_mean"]) <= 2 * f["acc_gap_seed_sd"] + 0.01
    # the optimizer counts global steps, so a schedule in steps decays slower per epoch on 2 replicas
    assert f["lr_ratio_step_schedule_2_vs_1"] > 1.3
    assert f["double_division_loss_ratio"] == pytest.approx(0.5, abs=1e-3)
    # BN across replicas
    assert f["max_abs_diff_syncbn_vs_single"] <= 1e-4 < f["max_abs_diff_unsynced_bn_vs_single"]
    # pitfalls
    assert f["clipnorm_per_replica_differs"] is True
    assert f["clip_step_ratio_k4"] > 1.1
    assert f["empty_replica_gives_nan"] is True
    assert f["drop_remainder_avoids_nan"] is True
    # two worker processes
    assert f["max_abs_diff_multiworker_vs_logical"] <= 1e-5
    assert f["max_abs_diff_multiworker_vs_single"] <= 1e-5
    # steps to target: scaling is not perfect all the way; the knee lies below B_simple
    assert f["smallest_batch"] < f["largest_batch"]
    assert (f["steps_to_target_largest_batch"]
            > f["steps_to_target_smallest_batch"] * f["smallest_batch"] / f["largest_batch"])
    assert f["smallest_batch"] <= f["knee_batch_measured"] <= f["largest_batch"]
    assert f["knee_batch_measured"] == f["critical_batch_size_measured"]
    assert f["knee_batch_measured"] < f["gradient_noise_scale_b_simple"]
    assert 50 < f["gradient_noise_scale_b_simple"] < 1438
    # Adam normalizes the gradient's scale away: summing replicas is (almost) averaging
    assert f["adam_summed_vs_averaged_step_ratio"] == pytest.approx(1.0, abs=0.01)
    assert f["replica_device_type"] in ("CPU", "GPU")


@pytest.mark.parametrize("params", [
    {"epochs": 0},
    {"base_learning_rate": math.nan},
    {"per_replica_batch": "abc"},
    {"replicas": 4},
    {"replicas": [1, 2, 8]},          # more replicas than the 4 logical devices
    {"warmup_epochs": -1},
    {"epochs": 50, "per_replica_batch": 4},   # too many training steps: refused, naming the parameters
])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
