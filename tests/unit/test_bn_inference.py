"""Fast tests of helpers.timeseries and helpers.bn_inference (small data, no notebook)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from helpers import models
from helpers import bn_inference as bi
from helpers.results import mnist1d_inference
from helpers.batchnorm import moving_statistics
from helpers.lessons.l02 import bn_forward
from helpers.timeseries import bayes_accuracy, load_windows, sensor_windows


@pytest.fixture(scope="module")
def windows():
    return load_windows(300, 32, 3, seed=7)


@pytest.fixture(scope="module")
def trained(windows):
    """A model fitted briefly, with non-trivial moving statistics and betas."""
    model, curves = bi.train_tracked(windows, momentum=0.5, epochs=2, batch_size=64, seed=3, desc="unit")
    return model, curves


# ---------------------------------------------------------------- generator
def test_generator_shapes_dtypes_and_seeding():
    x, y, offsets, gains = sensor_windows(50, 20, 4, seed=1)
    assert x.shape == (50, 20, 4) and x.dtype == np.float32
    assert y.shape == (50,) and set(np.unique(y)) <= {0, 1}
    assert offsets.shape == gains.shape == (4,)
    again = sensor_windows(50, 20, 4, seed=1)
    other = sensor_windows(50, 20, 4, seed=2)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
    assert not np.array_equal(x, other[0])


def test_faults_vibrate_harder_and_split_sizes():
    data = load_windows(1000, 64, 2, seed=0)
    assert len(data.x_train) == 800 and len(data.x_test) == 200
    level = data.x_train.std(axis=1).mean(axis=1)
    ratio = np.median(level[data.y_train == 1]) / np.median(level[data.y_train == 0])
    assert 1.6 < ratio < 2.5
    assert data.window_length == 64 and data.channels == 2


def test_generator_rejects_bad_sizes():
    with pytest.raises(ValueError):
        sensor_windows(1, 20, 2, seed=0)
    with pytest.raises(ValueError):
        sensor_windows(10, 20, 0, seed=0)


def test_bayes_accuracy_limits():
    assert bayes_accuracy(1.0, 0.2) == pytest.approx(0.5)
    assert 0.95 < bayes_accuracy(2.0, 0.2) < 0.97
    assert bayes_accuracy(3.0, 0.2) > bayes_accuracy(2.0, 0.2)


# ---------------------------------------------------------------- model and calls
def test_model_shapes_and_bn_count(trained, windows):
    model, curves = trained
    assert model.output_shape == (None, 1)
    assert bi.count_batchnorm(model) == 4
    p = bi.probabilities(model, windows.x_test)
    assert p.shape == (len(windows.x_test),) and np.all((p >= 0) & (p <= 1))
    assert len(curves["test_inference"]) == len(curves["fit_accuracy"]) == 2


def test_inference_mode_does_not_depend_on_batch(trained, windows):
    model, _ = trained
    one = bi.probabilities(model, windows.x_test, batch_size=1)
    many = bi.probabilities(model, windows.x_test, batch_size=32)
    assert np.max(np.abs(one - many)) <= 1e-5
    tr_one = bi.probabilities(model, windows.x_test, training=True, batch_size=1)
    tr_many = bi.probabilities(model, windows.x_test, training=True, batch_size=32)
    assert np.max(np.abs(tr_one - tr_many)) > 1e-3


def test_training_mode_calls_restore_statistics_only_when_asked(trained, windows):
    model, _ = trained
    copy = bi.copy_model(model)
    before = moving_statistics(copy)
    bi.probabilities(copy, windows.x_test[:8], training=True, batch_size=1)
    assert bi.moving_statistics_change(before, moving_statistics(copy)) == 0.0
    bi.probabilities(copy, windows.x_test[:8], training=True, batch_size=1, keep_statistics=False)
    assert bi.moving_statistics_change(before, moving_statistics(copy)) > 0.0
    # the original model was never touched
    assert bi.moving_statistics_change(before, moving_statistics(model)) == 0.0


def test_dense_bn_batch_of_one_is_beta_and_conv_is_instance_norm(trained, windows):
    model, _ = trained
    w = windows.x_test[:4]
    dense = bi.batch_of_one_bn_outputs(model, "bn_dense", w)
    beta = np.asarray(model.get_layer("bn_dense").beta)
    assert dense.shape == (4, beta.shape[0])
    assert np.max(np.abs(dense - beta)) <= 1e-5
    layer = model.get_layer("bn0")
    conv = bi.batch_of_one_bn_outputs(model, "bn0", w)
    assert conv.std() > 1e-2
    inputs = bi.layer_input(model, "bn0", w)
    by_hand = np.stack([bn_forward(c[None], np.asarray(layer.gamma), np.asarray(layer.beta), training=True,
                                   eps=layer.epsilon)[0] for c in inputs])
    assert np.max(np.abs(conv - by_hand)) <= 1e-4


def test_without_batchnorm_shares_weights_and_drops_bn(trained, windows):
    model, _ = trained
    stripped = bi.without_batchnorm(model)
    assert bi.count_batchnorm(stripped) == 0
    assert stripped.get_layer("conv0") is model.get_layer("conv0")
    assert bi.probabilities(stripped, windows.x_test[:5]).shape == (5,)


def test_fold_batchnorm_matches(trained, windows):
    model, _ = trained
    folded = bi.fold_batchnorm(model)
    assert bi.count_batchnorm(folded) == 0
    diff = np.abs(bi.probabilities(folded, windows.x_test) - bi.probabilities(model, windows.x_test))
    assert diff.max() <= 1e-4


def test_fold_batchnorm_with_bias_and_no_scale():
    import keras
    inputs = keras.Input((10, 2))
    h = keras.layers.Conv1D(3, 3, padding="same", use_bias=True)(inputs)
    bn = keras.layers.BatchNormalization(scale=False)
    h = bn(h)
    model = keras.Model(inputs, h)
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=3).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2, size=3).astype(np.float32))
    bn.beta.assign(rng.normal(size=3).astype(np.float32))
    model.layers[1].set_weights([rng.normal(size=(3, 2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)])
    x = rng.normal(size=(5, 10, 2)).astype(np.float32)
    folded = bi.fold_batchnorm(model)
    assert np.max(np.abs(np.asarray(folded(x)) - np.asarray(model(x, training=False)))) <= 1e-5


def test_frozen_bn_runs_in_inference_mode(trained, windows):
    model, _ = trained
    frozen = bi.copy_model(model, bn_trainable=False)
    a = bi.probabilities(frozen, windows.x_test, training=True, batch_size=1)
    b = bi.probabilities(model, windows.x_test)
    assert np.max(np.abs(a - b)) <= 1e-5


def test_subclassed_chain_propagates_or_overrides(trained, windows):
    model, _ = trained
    x = windows.x_test[:40]
    plain = bi.subclassed_chain(model)
    assert np.max(np.abs(bi.probabilities(plain, x, batch_size=1) - bi.probabilities(model, x))) <= 1e-5
    assert np.max(np.abs(bi.probabilities(plain, x, training=True, batch_size=40)
                         - bi.probabilities(model, x, training=True, batch_size=40))) <= 1e-5
    forced = bi.subclassed_chain(model, bn_training=True)
    assert np.max(np.abs(bi.probabilities(forced, x, batch_size=1) - bi.probabilities(forced, x, batch_size=40))) > 1e-3


def test_streaming_predictor_and_latency(trained, windows):
    model, _ = trained
    stream = windows.x_test[:12]
    out = bi.stream_latency(bi.streaming_predictor(model), stream, warmup=2)
    assert out["seconds"].shape == (12,) and np.all(out["seconds"] > 0)
    assert out["p95_ms"] >= out["median_ms"] > 0
    assert np.max(np.abs(out["probabilities"] - bi.probabilities(model, stream))) <= 1e-5
    assert bi.batched_ms_per_window(model, windows.x_test, batch_size=16, repeats=1) > 0


def test_batch_mates_and_window_in_batch(trained, windows):
    model, _ = trained
    idx = bi.batch_mates(50, 7, 10, seed=0)
    assert idx[0] == 7 and len(set(idx)) == 10 and np.all((idx >= 0) & (idx < 50))
    assert np.array_equal(idx, bi.batch_mates(50, 7, 10, seed=0))
    with pytest.raises(ValueError):
        bi.batch_mates(50, 50, 2, seed=0)
    x, y = windows.x_test, windows.y_test
    a = bi.window_in_batch(model, x, y, 3, 1, "inference")
    b = bi.window_in_batch(model, x, y, 3, 32, "inference")
    assert abs(a["probability"] - b["probability"]) <= 1e-5
    assert b["batch"].shape == (32,) and 0 <= b["rank"] <= 31
    with pytest.raises(ValueError):
        bi.window_in_batch(model, x, y, 3, 4, "sideways")


def test_plot_window_in_batch_draws(trained, windows):
    import matplotlib
    matplotlib.use("Agg")
    model, _ = trained
    out = bi.plot_window_in_batch(model, windows.x_test, windows.y_test, 2, 8, "training", reference=0.5)
    assert 0 <= out["probability"] <= 1


def test_accuracy_table_rows():
    table = bi.accuracy_table([("a", "b", 0.5), ("c", "d", 0.25)], title="t")
    assert table.column("test accuracy") == [0.5, 0.25]


def test_window_in_batch_table_highlights_the_window(trained, windows):
    model, _ = trained
    x, y = windows.x_test, windows.y_test
    table = bi.window_in_batch_table(model, x, y, 5, 16, "inference", reference=0.5)
    assert len(table) == 10 and len(table.highlight) == 1
    row = table.rows[next(iter(table.highlight))]
    assert row[-1] == "◀ window 5"
    assert sum(table.column("normal mates")) + sum(table.column("fault mates")) == 15
    p = bi.window_in_batch(model, x, y, 5, 16, "inference")["probability"]
    assert f"{p:.3f}" in table.title
    other = bi.window_in_batch_table(model, x, y, 5, 16, "training")
    assert other.title != table.title


def test_interleaved_stream_latency(trained, windows):
    model, _ = trained
    folded = bi.fold_batchnorm(model)
    out = bi.interleaved_stream_latency({"a": bi.streaming_predictor(model), "b": bi.streaming_predictor(folded)},
                                        windows.x_test[:6], warmup=1)
    assert set(out) == {"a", "b"} and out["a"]["seconds"].shape == (6,)
    assert np.max(np.abs(out["a"]["probabilities"] - out["b"]["probabilities"])) <= 1e-4


# ---------------------------------------------------------------- an accuracy is a sample; the oracle
def test_accuracy_interval_is_wilsons_and_stays_in_bounds():
    low, high = bi.accuracy_interval(0.98, 400)
    assert low == pytest.approx(0.9610, abs=1e-4) and high == pytest.approx(0.9898, abs=1e-4)
    assert bi.accuracy_interval(1.0, 400)[1] == 1.0 and bi.accuracy_interval(1.0, 400)[0] < 1.0
    assert bi.accuracy_interval(0.0, 10)[0] == 0.0
    wide, narrow = bi.accuracy_interval(0.9, 100), bi.accuracy_interval(0.9, 10_000)
    assert wide[1] - wide[0] > 5 * (narrow[1] - narrow[0])
    with pytest.raises(ValueError):
        bi.accuracy_interval(1.2, 10)


def test_oracle_thresholds_the_hidden_level():
    from helpers.timeseries import oracle_accuracy
    data = load_windows(4000, 16, 1, seed=5)
    assert data.level_test.shape == data.y_test.shape
    assert abs(oracle_accuracy(data) - bayes_accuracy()) < 0.03      # 800 windows: ~0.7 % standard error
    assert oracle_accuracy(data, fault_amplitude=1.0) < 0.8           # a threshold at 1 misreads half the normal windows
    # the level drawn is the one the windows carry: the oracle on the same generator without the test split agrees
    x, y, *_ = sensor_windows(4000, 16, 1, seed=5)
    assert np.array_equal(x[-800:], data.x_test) and np.array_equal(y[-800:], data.y_test)


# ---------------------------------------------------------------- MNIST-1D table
TINY = {**mnist1d_inference.MNIST1D_SETTINGS, "epochs": 3, "filters": (4, 4, 4), "dense": 4, "batch_size": 64}


@pytest.fixture(scope="module")
def tiny_mnist1d():
    from helpers.data import Digits
    from helpers.mnist1d import load_mnist1d
    d = load_mnist1d()
    return Digits(d.x_train[:256], d.y_train[:256], d.x_test[:64], d.y_test[:64])


def test_model_norms_and_classes():
    for norm, kinds in (("batch", {"BatchNormalization"}), ("none", set()), ("instance", {"GroupNormalization"})):
        model = models.conv1d_bn_model(40, 1, classes=10, norm=norm)
        found = {type(l).__name__ for l in model.layers} & {"BatchNormalization", "GroupNormalization"}
        assert found == kinds and model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="norm"):
        models.conv1d_bn_model(40, 1, norm="layer")


def test_mnist1d_row_regenerate_and_spreads(tiny_mnist1d, tmp_path):
    rows = mnist1d_inference.regenerate_inference_table(tmp_path / "t.csv", seeds=[0, 1], settings=TINY, data=tiny_mnist1d)
    assert len(rows) == 2 * len(mnist1d_inference.MNIST1D_RUNS) and (tmp_path / "t.provenance.json").exists()
    table = mnist1d_inference.read_mnist1d_table(tmp_path / "t.csv")
    bn0 = table[0, "bn"]
    assert 0 <= bn0["acc_instance_norm_batch1"] <= 1 and table[0, "no_norm"]["acc_training_batch1"] == ""
    assert bn0["steps"] == 3 * 4
    # the same seed retrained gives a row within the committed spread (here: exactly the same run)
    again = mnist1d_inference.inference_row("bn", 0, tiny_mnist1d, TINY, progress=False)
    spreads = mnist1d_inference.mnist1d_spreads(again, table, 0, len(tiny_mnist1d.y_test))
    assert [s.quantity.split(": ")[1] for s in spreads] == list(mnist1d_inference.MNIST1D_ACCURACIES)
    assert all(s.within for s in spreads)
    assert len(mnist1d_inference.mnist1d_spreads(table[1, "no_norm"], table, 1, 64)) == 2  # inference and two thirds only
    with pytest.raises(ValueError, match="run"):
        mnist1d_inference.train_mnist1d("layer_norm", 0, tiny_mnist1d, TINY)
