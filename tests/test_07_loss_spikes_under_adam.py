"""Lesson 07 (loss spikes under Adam): recorded findings on seeds 0-2, and bad parameters.

Each seed recomputes a different committed branch live (tests/notebook_runs.py: seed 0 the no-remedy branch
of seed 0, seed 1 the clip branch of seed 1, seed 2 the skip-step branch of seed 2; seeds 1 and 2 under another
machine's arithmetic) and one run from the first step (centred windows on seeds 0 and 2, random windows on
seed 1), and one 2 x LSTM(64) run with centred windows (seed 0 of the committed two on seeds 0 and 2, 500 steps;
seed 1 on seed 1, all 2,000 steps), and judges each as one more sample of the committed seeds. The expectations below come
from the issue's requirements and from closed forms computed here, not from the notebook's arithmetic.
"""
import math

import pytest
from notebook_runs import SEEDS

STEM = "07_loss_spikes_under_adam"
REMEDIES = {"none", "clip", "skip_step", "cap", "beta2_0.99", "lr_3e-4", "focal", "windows_random", "windows_centred"}


@pytest.mark.parametrize("seed", SEEDS)
def test_lesson_code(findings, seed):
    f = findings(STEM, seed)
    assert f["loss_from_logits"] is True
    b1, b2 = 0.9, 0.999
    assert f["adam_update_bound_growing_gradients"] == pytest.approx((1 - b1) / math.sqrt((1 - b2) * (1 - b1 ** 2 / b2)),
                                                                     rel=1e-9)
    assert 7.2 < f["adam_update_bound_growing_gradients"] < 7.35


@pytest.mark.parametrize("seed", SEEDS)
def test_asker_state_reached_and_held(findings, seed):
    f = findings(STEM, seed)
    assert f["spike_seeds"] >= 5                      # at least 5 seeds, all reported
    assert f["asker_state_steps"] >= 3000             # held at least 3,000 steps on every seed
    assert 0 < f["asker_state_median_batch_loss"] <= 0.005


@pytest.mark.parametrize("seed", SEEDS)
def test_variants_and_shape(findings, seed):
    f = findings(STEM, seed)
    assert set(f["spikes_per_1k_steps"]) == {"a", "b", "c", "d"}
    assert all(v >= 0 for v in f["spikes_per_1k_steps"].values())
    assert f["spikes_per_1k_steps"]["b"] > f["spikes_per_1k_steps"]["a"]
    assert f["asker_shape_variant"] in {"a", "b", "c", "d", "none"}


@pytest.mark.parametrize("seed", SEEDS)
def test_remedies(findings, seed):
    f = findings(STEM, seed)
    assert set(f["remedies"]) == REMEDIES
    for name, r in f["remedies"].items():
        assert set(r) == {"steps_to_target", "final_pr_auc", "spikes_per_1k_steps"}, name
        assert 0 <= r["final_pr_auc"] <= 1 and r["spikes_per_1k_steps"] >= 0
        assert r["steps_to_target"] is None or 0 <= r["steps_to_target"] <= 500
    assert f["recommended_remedy"] in REMEDIES
    assert f["clip_fraction_of_steps_clipped"] >= 0.01   # the clip engages
    # the live branch (another remedy per seed, other arithmetic on seeds 1 and 2) is one more sample
    assert f["committed_rows_recomputed"] == 3   # a branch from the snapshot, a run from the first step, a 64-unit run
    assert f["committed_rows_within_spread"] is True
    assert f["recommended_remedy_with_live_branch"] == f["recommended_remedy"]


@pytest.mark.parametrize("seed", SEEDS)
def test_remedies_from_the_first_step(findings, seed):
    f = findings(STEM, seed)
    scratch = f["remedies_from_scratch"]
    assert set(scratch) == REMEDIES                      # every remedy, from the first step too
    for name, r in scratch.items():
        assert set(r) == {"steps_to_target", "final_pr_auc", "spikes_per_1k_steps", "event_recall_1fa",
                          "seconds_per_step"}, name
        assert 0 <= r["final_pr_auc"] <= 1 and 0 <= r["event_recall_1fa"] <= 1 and r["spikes_per_1k_steps"] >= 0
        assert r["steps_to_target"] is None or 0 < r["steps_to_target"] <= 2000
        assert r["seconds_per_step"] > 0
    assert f["recommended_remedy_from_scratch"] in REMEDIES
    assert f["clip_fraction_from_scratch"] >= 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_checked_against_lstm64(findings, seed):
    f = findings(STEM, seed)
    assert f["recommended_remedy_from_scratch_lstm64"] in {"none", "clip", "windows_centred"}   # the remedies run at 64 units
    sizes = f["lstm64_vs_lstm16"]                        # no remedy, per seed, at each size
    assert set(sizes) == {"lstm16", "lstm64"}
    for u in sizes.values():
        assert set(u) == {"final_pr_auc", "jump_ratio", "recovery_steps", "jump_series_share"}
        assert all(len(v) == 2 for v in u.values())      # 2 seeds, as the issue asks
        assert all(0 <= v <= 1 for v in u["final_pr_auc"] + u["jump_series_share"]) and all(r > 1 for r in u["jump_ratio"])
        assert all(n is None or 1 <= n <= 1000 for n in u["recovery_steps"])    # counted after step 1,000 of 2,000
    live = f["lstm64_recomputed"]
    assert live["seed"] == seed % 2 and live["within_spread"] is True
    assert live["steps"] == (2000 if seed == 1 else 500)     # tests/notebook_runs.py: seed 1 recomputes the whole run
    assert 0 <= live["val_pr_auc"] <= 1


@pytest.mark.parametrize("bad", [
    {"seed": -1},
    {"seed": "x"},
    {"live_remedy": "gradient_clipping"},
    {"live_remedy": 3},
    {"live_scratch": "windows"},
    {"live_scratch": None},
    {"lstm64_steps": 150},
    {"lstm64_steps": 2100},
    {"lstm64_steps": "500"},
])
def test_bad_parameters_rejected(rejected, bad):
    rejected(STEM, bad)
