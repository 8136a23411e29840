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
    assert f["max_abs_diff_custom_loop_vs_fit"] <= 1e-5          # the step written on the page
    assert f["max_abs_diff_helper_loop_vs_fit"] <= 1e-5          # the helpers' copy the children run
    assert f["max_abs_diff_sum_vs_scaled_mean"] <= 1e-5
    assert f["max_abs_diff_2rep_vs_global_batch_epochs"] <= 1e-4  # whole epochs: the table may train on one device
    # this seed's 5-epoch runs: fewer steps at a fixed rate
    assert f["acc_k4_fixed_lr"] < f["acc_k1_fixed_lr"]
    # the committed runs to convergence, over seeds: equal epochs lose, equal steps do not, convergence shrinks the gap
    assert f["converged_seeds"] >= 5 and f["converged_epochs"] >= 50
    assert f["acc_gap_equal_epochs_mean"] > 0
    assert abs(f["acc_gap_equal_steps_mean"]) < f["acc_gap_equal_epochs_mean"] / 4
    assert f["acc_converged_gap_mean"] < f["acc_gap_equal_epochs_mean"] / 4
    assert f["acc_recovered_linear_rule_mean"] >= 0.5 * f["acc_gap_equal_epochs_mean"]
    assert abs(f["acc_converged_1dev_mean"] - f["acc_converged_2rep_scaled_lr_mean"]) <= 3 * f["acc_converged_gap_se"] + 1 / 359
    assert f["acc_converged_1dev_sd"] > 0 and f["acc_converged_2rep_sd"] > 0
    assert f["train_loss_ratio_converged_2rep_vs_1dev"] > 1          # half the steps at η: not at the same training loss
    # this seed's runs retrained now lie within the committed seeds' spread (headline runs and section 3's)
    assert f["committed_rows_recomputed"] >= 3
    assert f["committed_rows_within_spread"] is True
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
    assert (f["steps_to_target_largest_batch"]
            > f["steps_to_target_smallest_batch"] * f["smallest_batch"] / f["largest_batch"])
    assert f["smallest_batch"] <= f["critical_batch_size_measured"] <= f["largest_batch"]
    assert f["sweep_best_rate_interior"] is True                     # the rate grid does not cut the optimum off
    assert f["critical_batch_size_measured"] < f["gradient_noise_scale_b_simple"]
    # Adam normalizes the gradient's scale away, over 50 steps: summing replicas is (almost) averaging, the rest is
    # its epsilon's doing; SGD: summing is 4x the rate
    assert f["adam_50_steps_summed_vs_averaged_rel_diff"] <= 0.05 * f["sgd_50_steps_summed_vs_averaged_rel_diff"]
    assert f["adam_tiny_eps_50_steps_summed_vs_averaged_rel_diff"] <= f["adam_50_steps_summed_vs_averaged_rel_diff"] / 10
    assert f["sgd_50_steps_summed_vs_averaged_rel_diff"] >= 0.5


def test_replica_device_type_is_this_machines(findings):
    """The notebook's replicas ran on the GPUs exactly when this machine has one."""
    import tensorflow as tf
    expected = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    assert findings(STEM, SEEDS[0])["replica_device_type"] == expected


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
