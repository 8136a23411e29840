import math

import pytest

from notebook_runs import SEEDS

STEM = "01_steps_epochs_and_batches"


def _per_batch(text):
    """'B=4: 1, B=16: 3' -> {4: '1', 16: '3'}"""
    return {int(k.split("=")[1]): v.strip() for k, v in (part.split(":") for part in text.split(","))}


@pytest.mark.parametrize("seed", SEEDS)
def test_recorded_relations(findings, seed):
    f = findings(STEM, seed)
    # tf.data without repeat() runs out of data: one pass of 45 batches per epoch, 2 epochs asked
    assert f["batches_trained_without_repeat"] == 2 * 45
    assert -1.2 <= f["grad_noise_loglog_slope"] <= -0.8
    # same epochs, same learning rate: mini-batches end far lower than full batch
    assert f["final_loss_batch_32"] < 0.5 * f["final_loss_full_batch"]
    assert f["final_loss_batch_1"] < f["final_loss_full_batch"]
    # the noise scale: the honest two-batch estimate (no full gradient) lands near the exact value
    assert 50 < f["b_simple_exact"] < 1438
    assert f["gradient_noise_scale"] == f["b_simple_exact"]
    assert f["b_simple_two_batch_estimate"] == pytest.approx(f["b_simple_exact"], rel=0.15)
    # gradient accumulation is the full-batch gradient to float32 rounding
    assert f["accumulated_vs_full_gradient_max_abs_diff"] < 1e-6
    # tuned rates: bigger batches want bigger rates; the knee lies at a few tens of examples
    best = {b: float(r) for b, r in _per_batch(f["best_lr_per_batch"]).items()}
    assert best[4] < best[64]
    steps = {b: (None if s == "None" else int(s)) for b, s in _per_batch(f["steps_to_target_loss_at_tuned_rates"]).items()}
    assert steps[4] >= 2 * steps[16] and steps[256] >= 0.5 * steps[64]
    assert steps[1438] is None
    # timings are findings only (make bench judges them): recorded, nothing compared
    assert {"seconds_per_epoch_batch_1", "widget_batch_choice_median_s"}.issubset(f)


@pytest.mark.parametrize("params", [
    {"epochs": 0}, {"learning_rate": -0.1}, {"learning_rate": math.nan}, {"batches_per_size": "abc"},
    {"noise_batch_sizes": 4}, {"noise_batch_sizes": [1, 4]}, {"epochs_batch_1": 2.5},
    {"batches_per_size": 5000, "noise_batch_sizes": [100, 200, 300, 400, 500]},   # too costly: refused, named
    {"epochs": 200, "epochs_batch_1": 20},                                       # too many Keras steps
])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
