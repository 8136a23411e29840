"""Unit tests for helpers.imbalanced: generator, weights, metrics, losses (small data, no notebook)."""
import numpy as np
import pytest

from helpers import imbalanced as imb
from helpers import detection_metrics


def test_make_series_shapes_statistics_and_seed():
    d = imb.make_series(400, 128, frac_series_with_anomaly=0.25, anomalies_per_series=2, seed=3)
    assert d.x.shape == (400, 128, 1) and d.y.shape == (400, 128)
    assert d.x.dtype == np.float32
    stats = imb.series_stats(d)
    assert 0.18 < stats["frac_series_with_anomaly"] < 0.32
    assert stats["labelled_steps_per_anomalous_series"] == 2
    assert np.all(d.y.sum(axis=1)[d.has_anomaly] == 2) and np.all(d.y.sum(axis=1)[~d.has_anomaly] == 0)
    again = imb.make_series(400, 128, frac_series_with_anomaly=0.25, anomalies_per_series=2, seed=3)
    assert np.array_equal(d.x, again.x) and np.array_equal(d.y, again.y)
    other = imb.make_series(400, 128, frac_series_with_anomaly=0.25, anomalies_per_series=2, seed=4)
    assert not np.array_equal(d.x, other.x)


def test_anomaly_not_found_by_amplitude_alone():
    d = imb.make_series(300, 128, seed=0)
    assert imb.amplitude_only_pr_auc(d) < 0.5


def test_label_jitter_moves_some_labels_but_keeps_counts():
    d = imb.make_series(500, 128, label_jitter=0.5, seed=1)
    moved = np.any(d.y != d.true_y, axis=1)
    assert 0.2 < moved[d.has_anomaly].mean() < 0.8
    assert np.all(d.y.sum(axis=1)[d.has_anomaly] == 2)


def test_anomalies_per_series_must_be_below_timesteps():
    with pytest.raises(ValueError):
        imb.make_series(10, 64, anomalies_per_series=64)


def test_pr_auc_extremes():
    y = np.zeros((4, 50)); y[0, 3] = y[2, 10] = 1
    assert detection_metrics.pr_auc(y, y) == pytest.approx(1.0)
    assert detection_metrics.pr_auc(y, np.zeros_like(y)) == pytest.approx(y.mean())  # constant score: the positive rate
    score = np.zeros_like(y); score[0, 3] = 1; score[1, 1] = 2  # one false alarm ranked first
    # ranked: a false alarm, a hit (precision 1/2 at recall 1/2), then 198 ties holding the other hit
    assert detection_metrics.pr_auc(y, score) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 200)


def test_recall_at_precision_and_event_recall():
    y = np.zeros((3, 20)); y[0, 5] = y[1, 8] = 1
    s = np.zeros_like(y); s[0, 5] = 0.9; s[1, 10] = 0.8; s[2, 2] = 0.7
    assert detection_metrics.recall_at_precision(y, s, 0.5) == pytest.approx(0.5)
    assert detection_metrics.event_recall(y, s, tolerance=0) == pytest.approx(0.5)
    assert detection_metrics.event_recall(y, s, tolerance=2) == pytest.approx(1.0)
    assert detection_metrics.false_alarms_per_series(y, s, tolerance=2) == pytest.approx(1 / 3)


def test_timestep_weights_shapes_and_normalisation():
    y = np.zeros((4, 10), np.float32); y[1, 2] = 1
    w = imb.timestep_weights(y, 50.0)
    assert w.shape == (4, 10) and w[1, 2] == 50 and w.sum() == 39 + 50
    assert imb.timestep_weights(y[..., None], 50.0).shape == (4, 10)
    assert imb.timestep_weights(y, 50.0, normalise=True).mean() == pytest.approx(1.0)
    assert imb.positive_weight_for(y) == pytest.approx(39.0)


def test_class_weight_traps_reproduce():
    traps = imb.class_weight_traps(seed=0)
    assert traps["raises_3d"] and traps["weights_wrong_2d"] and traps["raises_2d_with_sample_weight"]
    assert traps["loss_sample_weight_3d"] == pytest.approx(traps["loss_expected_2d"], rel=1e-4)


def test_train_test_split_is_by_series():
    d = imb.make_series(100, 64, seed=0)
    tr, te = imb.train_test_split(d, 0.25, seed=0)
    assert tr.n_series + te.n_series == 100 and te.n_series == 25


def test_precision_recall_curve_thresholds_select_the_ranked_groups():
    y = np.zeros((2, 10)); y[0, 1] = y[1, 4] = 1
    s = np.zeros_like(y); s[0, 1] = 0.9; s[1, 7] = 0.8; s[1, 4] = 0.6
    c = detection_metrics.precision_recall_curve(y, s)
    # groups by score: {0.9: hit}, {0.8: false alarm}, {0.6: hit}, {0: 17 negatives}
    assert c["precision"][:3] == pytest.approx([1.0, 0.5, 2 / 3])
    assert c["recall"][:3] == pytest.approx([0.5, 0.5, 1.0])
    for t, p in zip(c["thresholds"], c["precision"]):
        fired = s > t
        assert (fired & (y > 0)).sum() / fired.sum() == pytest.approx(p)
    assert detection_metrics.precision_recall_curve(np.zeros((2, 3)), np.ones((2, 3)))["thresholds"].size == 0


def test_best_f1_threshold_and_f1_at():
    y = np.zeros((2, 10)); y[0, 1] = y[1, 4] = 1
    s = np.zeros_like(y); s[0, 1] = 0.9; s[1, 7] = 0.8; s[1, 4] = 0.6
    best = detection_metrics.best_f1_threshold(y, s)
    # F1 at the three cuts: 2/3, 1/2, 0.8 → the third (both hits, one false alarm)
    assert best["f1"] == pytest.approx(0.8) and 0.0 < best["threshold"] < 0.6
    assert detection_metrics.f1_at(y, s, best["threshold"]) == pytest.approx(0.8)
    assert detection_metrics.f1_at(y, s, 0.95) == 0.0


def test_false_alarms_per_1000_steps():
    y = np.zeros((4, 250)); y[0, 100] = 1
    s = np.zeros_like(y); s[0, 101] = 0.9; s[2, 10] = 0.9; s[3, 200] = 0.9   # one near the label, two far
    assert detection_metrics.false_alarms_per_1000_steps(y, s, threshold=0.5, tolerance=2) == pytest.approx(2.0)
    assert detection_metrics.false_alarms_per_1000_steps(y, s, threshold=0.5, tolerance=0) == pytest.approx(3.0)


def test_sigmoid_and_bce_from_logits_are_exact_at_extreme_logits():
    z = np.array([-40.0, -20.0, 0.0, 20.0])
    assert imb.sigmoid(z)[1] == pytest.approx(np.exp(-20) / (1 + np.exp(-20)), rel=1e-12)
    assert imb.bce_from_logits_np(np.ones(4), z)[0] == pytest.approx(40.0, rel=1e-12)   # no clip at 1e-7
    assert imb.bce_from_logits_np(np.zeros(4), z)[3] == pytest.approx(20.0, rel=1e-8)


def test_miss_arithmetic_clipped_form_is_flat_below_the_clip():
    m = imb.miss_arithmetic(1000.0, -20.0, 3, steps_in_batch=1000, normal_loss=0.0)
    assert m["grad_clipped"] == 0.0 and m["grad_logits"] == pytest.approx(-1000.0, rel=1e-8)
    assert m["loss_of_miss_clipped"] == pytest.approx(-1000 * np.log(1e-7))
    assert m["batch_loss_logits"] == pytest.approx(3 * m["loss_of_miss_logits"] / 1000)


def test_lstm_tagger_logits_output_has_no_sigmoid():
    x = np.random.default_rng(0).normal(size=(2, 8, 1)).astype(np.float32)
    a = imb.lstm_tagger(4, seed=0, logits=True)
    b = imb.lstm_tagger(4, seed=0)
    assert np.allclose(imb.sigmoid(np.asarray(a(x))), np.asarray(b(x)), atol=1e-6)


def test_tagger_loop_is_seeded_and_uses_the_given_step():
    import keras, tensorflow as tf
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    calls = []
    def weighted(y, z, w): return loss(y, z, sample_weight=w)
    def step(model, opt, x, y, w):
        calls.append(1)                     # traced once
        with tf.GradientTape() as tape:
            l = weighted(y, model(x, training=True), w)
        opt.apply(tape.gradient(l, model.trainable_variables), model.trainable_variables)
        return l
    split = imb.make_split(60, 32, seed=1, monitor_series=4)
    loop = imb.TaggerLoop(4, step=step, loss=weighted, jit_compile=False)
    kw = dict(positive_weight=20.0, monitor_weight=20.0, learning_rate=1e-2, epochs=2, batch_size=8, seed=3)
    a, b = loop.fit(split, **kw), loop.fit(split, **kw)
    assert np.array_equal(a.batch_loss, b.batch_loss) and len(a.batch_loss) == 2 * (45 // 8)
    assert len(calls) == 1 and a.monitor_steps[0] == 0 and a.logits(split.test.x).shape == (15, 32)
