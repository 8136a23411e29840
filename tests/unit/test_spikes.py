"""Unit tests for helpers.spikes: running-mean recovery, spike flags, intervals,
the inspector callback, summaries, and the determinism the committed spike map relies on."""
import numpy as np
import pytest

from helpers import imbalanced as imb
from helpers import spikes


def test_undo_running_mean_recovers_batch_values():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.01, 3.0, 9)
    sizes = np.array([32] * 8 + [11])
    running = np.cumsum(losses * sizes) / np.cumsum(sizes)  # what Keras 3 logs
    assert spikes.undo_running_mean(running, sizes) == pytest.approx(losses, rel=1e-9)


def test_flag_spikes_needs_ratio_and_size():
    flat = np.full(30, 0.01)
    small = flat.copy(); small[20] = 0.05          # 5× but only 0.04 above: flagged at min_jump 0.02
    tiny = flat.copy(); tiny[20] = 0.025           # 2.5×: below the ratio
    assert spikes.flag_spikes(small, ratio=3, min_jump=0.02)[20]
    assert not spikes.flag_spikes(small, ratio=3, min_jump=0.1).any()
    assert not spikes.flag_spikes(tiny, ratio=3, min_jump=0.001).any()
    descent = np.geomspace(2.0, 0.01, 30)         # a falling loss is never a spike
    assert not spikes.flag_spikes(descent).any()


def test_wilson_interval_known_values():
    lo, hi = spikes.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = spikes.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_inspector_recovers_true_batch_losses_from_keras_logs():
    import keras
    d = imb.make_series(40, 16, frac_series_with_anomaly=0.5, seed=0)
    keras.utils.set_random_seed(0)
    model = spikes.inspected_tagger(4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    w = imb.timestep_weights(d.y, 20.0)
    insp = spikes.SpikeInspector(d.x[:8], d.y[:8], w[:8], every=2, batch_sizes_per_epoch=[16, 16, 8])
    model.fit(d.x, d.y[..., None], sample_weight=w, batch_size=16, epochs=2, verbose=0, callbacks=[insp])
    assert len(insp.batch_loss) == 6 and len(insp.monitor_loss) == 4
    assert insp.batch_loss == pytest.approx(insp.raw_batch_loss, rel=1e-4)
    assert not np.allclose(insp.keras_loss[1:3], insp.raw_batch_loss[1:3], rtol=1e-3)  # logs are running means


def test_summaries_and_choice():
    rows = []
    for seed in range(4):
        rows.append({"remedy": "weighted", "clipnorm": "", "seed": seed, "spiked": int(seed < 3),
                     "max_monitored_ratio": 10.0, "max_monitored_jump": 0.1, "pr_auc": 0.99,
                     "event_recall": 1.0, "seconds": 1.0})
        for c, ratio in ((0.5, 5.0), (0.05, 20.0)):
            rows.append({"remedy": "clip", "clipnorm": c, "seed": seed, "spiked": 1, "max_monitored_ratio": ratio,
                         "max_monitored_jump": 0.1, "pr_auc": 0.99, "event_recall": 1.0, "seconds": 1.0})
        rows.append({"remedy": "lower_lr", "clipnorm": "", "seed": seed, "spiked": 0, "max_monitored_ratio": 1.5,
                     "max_monitored_jump": 0.0, "pr_auc": 0.985, "event_recall": 1.0, "seconds": 1.0})
    summary = {r["remedy"]: r for r in spikes.summarise_remedies(rows)}
    assert set(summary) == {"weighted", "clip (higher)", "clip (lower)", "lower_lr"}
    assert summary["clip (higher)"]["seeds_ratio_below_baseline"] == 4
    assert summary["clip (lower)"]["seeds_ratio_below_baseline"] == 0
    assert spikes.choose_remedy(list(summary.values()))["remedy"] == "lower_lr"
    cells = spikes.summarise_spike_map([{"learning_rate": 0.1, "positive_weight": "30.0", "seed": s, "spiked": s % 2,
                                         "max_monitored_ratio": 2.0, "pr_auc": 1.0} for s in range(10)])
    assert cells[0]["fraction"] == 0.5 and cells[0]["ci_low"] < 0.5 < cells[0]["ci_high"]


def test_train_run_is_deterministic_and_logs_every_step():
    split = spikes.make_split(100, 64, seed=5, monitor_series=8)
    kw = dict(remedy="weighted", learning_rate=0.03, positive_weight=50.0, epochs=2, batch_size=16, units=4, seed=5)
    a, _ = spikes.train_run(split, **kw)
    b, _ = spikes.train_run(split, **kw)
    steps = 2 * (75 // 16)
    assert len(a.batch_loss) == steps and len(a.grad_norm) == steps and len(a.monitor_loss) == 1 + steps // 2
    assert np.array_equal(a.batch_loss, b.batch_loss) and np.array_equal(a.monitor_loss, b.monitor_loss)


def test_clip_remedy_bounds_the_update():
    split = spikes.make_split(100, 64, seed=6, monitor_series=8)
    res, _ = spikes.train_run(split, remedy="clip", clipnorm=1e-3, learning_rate=0.03, positive_weight=50.0,
                              epochs=1, batch_size=16, units=4, seed=6)
    assert res.clipnorm == 1e-3 and np.all(res.grad_norm > 1e-3)  # every step was clipped
