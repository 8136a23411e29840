import math

import pytest

from notebook_runs import SEEDS

STEM = "01_steps_epochs_and_batches"


@pytest.mark.parametrize("seed", SEEDS)
def test_recorded_relations(findings, seed):
    f = findings(STEM, seed)
    assert f["epochs_1000x100_on_55000"] == pytest.approx(100_000 / 55_000)
    assert f["epochs_20000x50_on_55000"] == pytest.approx(1_000_000 / 55_000)
    assert -1.2 <= f["grad_noise_loglog_slope"] <= -0.8
    # same epochs, same learning rate: mini-batches end far lower than full batch
    assert f["final_loss_batch_32"] < 0.5 * f["final_loss_full_batch"]
    assert f["final_loss_batch_1"] < f["final_loss_full_batch"]
    # a full-batch epoch is one step; a batch-1 epoch is 1,438
    assert f["seconds_per_epoch_batch_1"] > f["seconds_per_epoch_batch_32"] > 0
    assert f["seconds_per_epoch_batch_1"] > 5 * f["seconds_per_epoch_full_batch"]
    # the noise scale sits at a few hundred examples, and both estimators agree
    assert 50 < f["gradient_noise_scale"] < 1438
    assert f["gradient_noise_scale_from_batches"] == pytest.approx(f["gradient_noise_scale"], rel=0.15)
    assert f["activation_gib_full_batch_55000"] > 8
    assert f["widget_batch_choice_median_s"] <= 0.3


@pytest.mark.parametrize("params", [
    {"epochs": 0}, {"learning_rate": -0.1}, {"learning_rate": math.nan}, {"batches_per_size": "abc"},
    {"noise_batch_sizes": 4}, {"noise_batch_sizes": [1, 4]}, {"epochs_batch_1": 2.5},
])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
