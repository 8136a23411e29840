"""Lesson 06 (imbalanced per-timestep labels): recorded findings on seeds 0-2, and bad parameters.

Every assertion compares a measurement of the run with an expectation that the run did not
compute from the same thing. The lesson reads no committed table: every number is measured live,
so seeds 1 and 2 draw other data, splits and initial weights and re-verify every claim on them.
Times are findings only (`make bench` judges them).
"""
import math

import pytest
from notebook_runs import SEEDS

STEM = "06_imbalanced_timestep_labels"


@pytest.mark.parametrize("seed", SEEDS)
def test_plain_bce_learns_silence_and_weights_fix_it(findings, seed):
    f = findings(STEM, seed)
    assert f["amplitude_only_pr_auc"] < 0.5                      # the value alone does not find the anomalies
    assert f["event_recall_plain_bce"] < 0.2 and f["pr_auc_plain_bce"] < 0.2
    assert f["pr_auc_weighted"] > f["pr_auc_plain_bce"] + 0.3
    assert f["event_recall_weighted"] > f["event_recall_plain_bce"]
    assert 0 < f["acc_all_zeros"] < 1


@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_from_validation_transfers_to_test(findings, seed):
    f = findings(STEM, seed)
    # chosen on validation series, judged on test series: within 0.1 F1 of the hindsight optimum
    assert f["test_f1_at_validation_threshold"] >= f["test_f1_hindsight_best"] - 0.1
    assert f["event_recall_at_threshold"] > f["event_recall_plain_bce"]
    assert 0 < f["decision_threshold"] < 1 and f["false_alarms_per_1000_steps_at_threshold"] >= 0


@pytest.mark.parametrize("seed", SEEDS)
def test_keras_traps_and_reductions(findings, seed):
    f = findings(STEM, seed)
    assert f["class_weight_3d_raises"] is True
    assert f["class_weight_2d_weights_wrong"] is True
    # Keras's two reductions against the page's NumPy arithmetic: ÷ B·T by default, ÷ Σw with mean_with_sample_weight
    assert f["keras_reduction_vs_arithmetic_max_rel_error"] < 1e-3
    assert f["keras_mean_with_sample_weight_vs_arithmetic_max_rel_error"] < 1e-3
    assert f["keras_log_is_running_mean_max_gap"] > 0.05
    assert f["running_mean_recovery_max_rel_error"] < 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_from_logits(findings, seed):
    f = findings(STEM, seed)
    # the page's loss: autodiff gradient of a positive = −w·(1 − σ(z)) at every logit tried, down to −20
    assert f["loss_from_logits"] is True
    assert f["logits_gradient_max_rel_error"] < 1e-4
    # a loss on p clipped to [1e-7, 1 − 1e-7] is flat below the clip: σ(−20) ≈ 2e-9
    assert f["clipped_loss_gradient_at_logit_minus_20"] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_askers_arithmetic(findings, seed):
    f = findings(STEM, seed)
    # the asker's batch: 128 × 4,096 steps, 128 · 0.2 · 2 positives, w = neg/pos; one miss at logit z adds
    # w·softplus(−z) / (128·4096) to the batch mean, so 0.005 → 3.6 needs ⌈3.595 / that⌉ misses
    steps, positives = 128 * 4096, 128 * 0.2 * 2
    w = (steps - positives) / positives
    def needed(z):
        return math.ceil((3.6 - 0.005) / (w * math.log1p(math.exp(-z)) / steps))
    assert f["misses_for_asker_spike_p001"] == needed(math.log(0.01 / 0.99))
    assert f["misses_for_asker_spike_logit_minus_20"] == needed(-20.0)
    assert f["misses_for_asker_spike_logit_minus_20"] < f["misses_for_asker_spike_p001"]
    assert 0.005 <= f["asker_batch_loss_fitted"] < 0.01          # fitted positives add next to nothing


@pytest.mark.parametrize("seed", SEEDS)
def test_reading_the_loss(findings, seed):
    f = findings(STEM, seed)
    assert f["max_batch_loss_ratio_weighted"] > f["max_monitored_ratio_weighted"]
    assert f["fixed_confident_model_batch_loss_spread"] >= 3
    assert f["fixed_confident_model_batch_loss_spread"] > f["fixed_model_batch_loss_spread"]
    assert f["loss_share_of_anomalous_steps"] > 0.2
    assert 0 < f["largest_step_share_of_batch_loss"] <= 1


@pytest.mark.parametrize("bad", [
    {"n_series": 0},
    {"timesteps": -5},
    {"positive_weight": "abc"},
    {"learning_rate": float("nan")},
    {"frac_series_with_anomaly": 1.5},
    {"epochs": [3]},
    {"label_jitter": 2.0},
    {"batch_size": 0},
])
def test_bad_parameters_rejected(rejected, bad):
    rejected(STEM, bad)


def test_anomalies_must_be_fewer_than_timesteps(tmp_path):
    from notebook_runs import run_rejected
    result, _ = run_rejected(STEM, {"anomalies_per_series": 64, "timesteps": 64}, tmp_path)
    assert "anomalies_per_series" in result.error and "64" in result.error


def test_expensive_combination_refused_naming_its_parameters(tmp_path):
    from notebook_runs import run_rejected
    result, _ = run_rejected(STEM, {"n_series": 20000, "timesteps": 8192, "epochs": 100}, tmp_path)
    for name in ("n_series", "timesteps", "epochs"):
        assert name in result.error, result.error
    assert "expected at most" in result.error and "series-steps" in result.error, result.error
