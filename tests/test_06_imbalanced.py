"""Lesson 06 (imbalanced per-timestep labels): recorded findings on seeds 0-2, and bad parameters.

Every assertion compares a measurement of the run with an expectation that the run did not
compute from the same thing. Seeds 1 and 2 recompute other committed rows than seed 0 (the
notebook picks the spike-map and asker-regime rows seed % 10, and the checkpoint of the remedies table
seed % 2 of the fitted seeds 0 and 2; seed 2 runs the stretch at 100 quiet batches instead of 200 and
retrains the focal row too; the from-scratch row is (checkpoint seed, lower_lr) for seeds 0 and 1 and
(0, epsilon_1e-3) for seed 2), so these tests re-verify other rows of each committed table. Times are findings only (`make bench` judges them).
"""
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
def test_threshold_from_validation_transfers_to_test(findings, seed):
    f = findings(STEM, seed)
    # chosen on validation series, judged on test series: within 0.1 F1 of the hindsight optimum
    assert f["test_f1_at_validation_threshold"] >= f["test_f1_hindsight_best"] - 0.1
    assert f["event_recall_at_threshold"] > f["event_recall_plain_bce"]


@pytest.mark.parametrize("seed", SEEDS)
def test_keras_traps(findings, seed):
    f = findings(STEM, seed)
    assert f["class_weight_3d_raises"] is True
    assert f["class_weight_2d_weights_wrong"] is True
    assert f["keras_log_is_running_mean_max_gap"] > 0.05
    assert f["running_mean_recovery_max_rel_error"] < 1e-3
    # the page's loss arithmetic against Keras's own reduction
    assert f["keras_reduction_vs_arithmetic_max_rel_error"] < 1e-3


@pytest.mark.parametrize("seed", SEEDS)
def test_spike_measurement(findings, seed):
    f = findings(STEM, seed)
    assert f["max_batch_loss_ratio_weighted"] > f["max_monitored_ratio_weighted"]
    assert f["fixed_confident_model_batch_loss_spread"] >= 3
    assert f["fixed_confident_model_batch_loss_spread"] > f["fixed_model_batch_loss_spread"]
    assert f["loss_share_of_anomalous_steps"] > 0.2


@pytest.mark.parametrize("seed", SEEDS)
def test_committed_rows_recomputed(findings, seed):
    f = findings(STEM, seed)
    # the notebook retrained one spike-map row, the first steps of one asker-regime row and of one
    # from-scratch row, and the baseline row of data/remedies.csv (seed 2: the focal row too), and judged
    # each as one more sample of the committed seeds (seeds 1 and 2 run under other arithmetic:
    # tests/notebook_runs.py, RUN_ENVIRONMENTS)
    assert f["committed_rows_recomputed"] == (5 if seed == 2 else 4)
    assert f["committed_rows_within_spread"] is True
    # the map's claim, evaluated again with the live row in place of its seed's
    assert f["spike_fraction_of_seeds_high_lr_with_live_row"] >= f["spike_fraction_of_seeds_asker_lr_short_runs"] + 0.3


@pytest.mark.parametrize("seed", SEEDS)
def test_asker_regime_trained_to_a_fit(findings, seed):
    f = findings(STEM, seed)
    # every seed of the asker's regime fitted (validation PR-AUC ≥ 0.8) and was watched 200 steps after its fit,
    # so the spike fraction is over at least 10 fitted seeds
    assert f["asker_regime_seeds_fitted"] >= 10
    assert f["asker_regime_steps_watched_after_fit"] == 200 * f["asker_regime_seeds_fitted"]
    assert 0.8 <= f["pr_auc_asker_lr"] <= 1 and 0 <= f["spike_fraction_of_seeds_asker_lr"] <= 1
    # the map's 210-step runs at 1e-3 are at chance; the asker's regime needs hundreds of steps more
    assert f["median_pr_auc_asker_lr_committed"] < 0.05 < f["pr_auc_asker_lr"]
    assert f["asker_regime_fit_step_median"] > 210


@pytest.mark.parametrize("seed", SEEDS)
def test_asker_shaped_spike_at_asker_lr(findings, seed):
    f = findings(STEM, seed)
    # seeds 0 and 2 start from checkpoint 0, seed 1 from checkpoint 2 (the fitted seeds); seed 2's stretch is 100
    assert f["stretch_checkpoint_seed"] == (0, 2)[seed % 2]
    assert f["stretch_quiet_batches"] == (100 if seed == 2 else 200)
    # the asker's shape: a fitted model's loss under 0.01, then a jump of ≥ 100× on an ordinary batch
    assert f["stretch_last_quiet_loss"] < 0.01
    assert f["stretch_first_ordinary_loss"] >= 100 * f["stretch_last_quiet_loss"]
    assert f["stretch_positives_missed_after"] > 0
    assert f["stretch_pr_auc_after"] < f["pr_auc_asker_lr"]
    assert "without a labelled positive" in f["spike_cause"]
    # ordinary Adam steps only: Kingma & Ba's bound (1 - β1) / sqrt(1 - β2) on |Δw|/lr
    bound = (1 - 0.9) / (1 - 0.999) ** 0.5
    assert f["stretch_update_over_lr_max"] <= bound and f["stretch_spike_step_update_over_lr_max"] <= bound
    # one batch labelled where its series show nothing: ≥ 10× its loss correctly labelled, yet the next
    # batches score as at the checkpoint; labels moved 2 steps cost less
    assert f["bad_batch_loss"] >= 10 * f["bad_batch_loss_as_labelled"]
    assert f["bad_batch_loss_jitter"] < f["bad_batch_loss"]
    assert f["bad_batch_next_max_loss"] <= 2 * f["bad_batch_next_max_loss_at_checkpoint"]


@pytest.mark.parametrize("seed", SEEDS)
def test_remedies_at_asker_lr(findings, seed):
    f = findings(STEM, seed)
    assert f["best_remedy"] in {"shuffled", "lower_lr", "global_clipnorm", "epsilon_1e-3", "beta2_0.99", "amsgrad",
                                "normalised_loss", "focal", "baseline"}
    # the choice keeps the fit from the first step too: a remedy measured from scratch must have fitted every seed
    # there, as the baseline did (both checkpoint seeds fitted in the asker's table)
    assert f["scratch_seeds_fitted_baseline"] == 2
    key = f["best_remedy"].replace("-", "_").replace(".", "")
    if f"scratch_seeds_fitted_{key}" in f:
        assert f[f"scratch_seeds_fitted_{key}"] == f["scratch_seeds_fitted_baseline"]
    # a lower learning rate from the first step learns more slowly: the asker's own observation
    assert f["scratch_pr_auc_final_lower_lr"] < f["scratch_pr_auc_final_baseline"]
    assert f["best_remedy_first_ordinary_loss"] <= f["baseline_first_ordinary_loss"]
    assert 0 <= f["best_remedy_steps_to_target"] <= 20 and 0 <= f["baseline_steps_to_target"] <= 20
    # the from-scratch fit of section 6 takes hundreds of steps; recovering from the stretch, a few dozen at most
    assert f["baseline_steps_to_fit_from_scratch"] > 10 * max(f["baseline_steps_to_target"], 1)


def test_a_spike_is_replayed_on_some_seed(findings):
    # at lr 0.1, 8 of the map's 10 committed seeds spike; whether one live row does is a sample (seed 2 runs
    # with one ulp moved and did not spike here: tests/notebook_runs.py). At that rate all three of seeds 0-2
    # miss with probability about 0.2³ < 1 %, so at least one must give the replay a spike
    found = [findings(STEM, seed)["adam_spike_found"] for seed in SEEDS]
    assert any(found), found


@pytest.mark.parametrize("seed", SEEDS)
def test_adam_at_the_spike_step(findings, seed):
    f = findings(STEM, seed)
    # the replay of section 6's live row finds a monitored spike exactly when that row spiked
    assert f["adam_spike_found"] is f["spike_map_live_row_spiked"]
    if not f["adam_spike_found"]:
        assert "adam_update_over_lr_at_spike_median" not in f     # nothing is reported about a spike that was not
        return
    # the update that raised the monitored loss is an ordinary Adam step, not an outsized one
    assert f["adam_update_over_lr_at_spike_median"] <= 1.5 * f["adam_update_over_lr_quiet_median"]
    # Kingma & Ba's bound on |Δw|/lr for β1 = 0.9, β2 = 0.999: (1 - β1) / sqrt(1 - β2)
    bound = (1 - 0.9) / (1 - 0.999) ** 0.5
    assert max(f["adam_update_over_lr_at_spike_max"], f["adam_update_over_lr_next_step_max"]) <= bound
    # one step hardly moves √v̂ (β2 = 0.999)
    assert abs(f["adam_sqrt_v_ratio_after_before_spike"] - 1) < 0.05
    # the large gradient comes on the next batch, whose loss jumped
    assert f["grad_norm_over_quiet_median_next_step"] >= 3
    # clipping that gradient changes Adam's update far less than it changes the gradient
    assert f["clip_grad_norm_change_at_spike"] > 1
    assert f["clip_update_change_at_spike"] < f["clip_grad_norm_change_at_spike"] / 2
    assert f["positives_missed_after_spike"] >= f["positives_missed_before_spike"]


@pytest.mark.parametrize("bad", [
    {"n_series": 0},
    {"timesteps": -5},
    {"positive_weight": "abc"},
    {"learning_rate": float("nan")},
    {"frac_series_with_anomaly": 1.5},
    {"epochs": [3]},
    {"quiet_batches": 0},
    {"remedy_recheck": "clipping"},
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
