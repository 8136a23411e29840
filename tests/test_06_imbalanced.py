"""Lesson 06 (imbalanced per-timestep labels): recorded findings on seeds 0-2, and bad parameters."""
import math

import pytest
from notebook_runs import SEEDS

STEM = "06_imbalanced_timestep_labels"


@pytest.mark.parametrize("seed", SEEDS)
def test_imbalance_and_weighting(findings, seed):
    f = findings(STEM, seed)
    assert f["acc_all_zeros"] >= 0.99
    assert f["anomalous_step_fraction"] < 0.01
    assert f["anomalous_step_fraction_full_length"] < 0.0005
    assert f["amplitude_only_pr_auc"] < 0.5
    assert f["pr_auc_weighted"] > f["pr_auc_plain_bce"] + 0.3
    assert f["event_recall_weighted"] > f["event_recall_plain_bce"]


@pytest.mark.parametrize("seed", SEEDS)
def test_keras_traps(findings, seed):
    f = findings(STEM, seed)
    assert f["class_weight_3d_raises"] is True
    assert f["class_weight_2d_weights_wrong"] is True
    assert f["keras_log_is_running_mean_max_gap"] > 0.05
    assert f["running_mean_recovery_max_rel_error"] < 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_spike_measurement(findings, seed):
    f = findings(STEM, seed)
    assert f["max_batch_loss_ratio_weighted"] > f["max_monitored_ratio_weighted"]
    assert f["fixed_confident_model_batch_loss_spread"] >= 3
    assert f["fixed_confident_model_batch_loss_spread"] > f["fixed_model_batch_loss_spread"]
    assert f["loss_share_of_anomalous_steps"] > 0.2
    assert f["normals_outweighed_by_one_miss_asker"] > 1e5


@pytest.mark.parametrize("seed", SEEDS)
def test_spike_map_cell_reproduces_committed_csv(findings, seed):
    f = findings(STEM, seed)
    # the notebook re-ran one cell of the map (seed % 10) and compared it with data/spike_map.csv
    assert f["spike_map_live_ratio_diff"] < 0.05
    assert 0 <= f["spike_fraction_of_seeds_high_lr"] <= 1
    assert f["spike_fraction_of_seeds_high_lr"] >= f["spike_fraction_of_seeds_asker_lr"] + 0.3


@pytest.mark.parametrize("seed", SEEDS)
def test_remedies_recorded(findings, seed):
    f = findings(STEM, seed)
    for name in ("pr_auc_clipped", "pr_auc_focal", "pr_auc_prior_bias", "pr_auc_normalised_weights",
                 "event_recall_best"):
        assert 0 <= f[name] <= 1 and math.isfinite(f[name])
    assert isinstance(f["best_remedy"], str) and f["best_remedy"] != "weighted"
    assert f["best_remedy_spike_fraction"] < f["remedy_baseline_spike_fraction"]
    assert f["widget_mechanism_median_s"] <= 0.3 and f["widget_runs_median_s"] <= 0.3


@pytest.mark.parametrize("bad", [
    {"n_series": 0},
    {"timesteps": -5},
    {"positive_weight": "abc"},
    {"learning_rate": float("nan")},
    {"frac_series_with_anomaly": 1.5},
    {"epochs": [3]},
    {"clip_norms": 0.5},
])
def test_bad_parameters_rejected(rejected, bad):
    rejected(STEM, bad)


def test_anomalies_must_be_fewer_than_timesteps(tmp_path):
    from notebook_runs import run_rejected
    result, _ = run_rejected(STEM, {"anomalies_per_series": 64, "timesteps": 64}, tmp_path)
    assert "anomalies_per_series" in result.error and "64" in result.error
