"""helpers.diagnose.callback.DiagnoseCallback on tiny models: the spike rule, the recovered batch losses,
the positives read through the wrapped train_step, and the BN check inside fit."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

from helpers.spikes.flags import flag_spikes
from helpers.workbook.environment import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers.diagnose.callback import DiagnoseCallback, incremental_flags  # noqa: E402
from helpers.spikes.inspector import InspectedModel  # noqa: E402


# fit's train_step that also logs the raw batch loss (and grad_norm): the reference for the recovered losses
RawLossModel = InspectedModel


class LogRecorder(keras.callbacks.Callback):
    def __init__(self, key):
        super().__init__()
        self.key, self.values = key, []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs[self.key]))


# ---------------------------------------------------------------- (a) the incremental rule is flag_spikes


def test_incremental_flags_equal_flag_spikes():
    rng = np.random.default_rng(0)
    decay = 0.05 + np.exp(-np.arange(300) / 40.0)
    values = decay * np.exp(0.3 * rng.normal(size=300))
    values[[5, 40, 41, 120, 250]] *= [6.0, 4.0, 8.0, 20.0, 3.5]   # planted spikes, one pair in a row
    values[200] = np.nan                                           # a NaN keeps both rules silent for a while
    values[280] = 0.0
    for window, ratio, min_jump in [(10, 3.0, 0.02), (3, 2.0, 0.0), (25, 1.5, 0.1), (1, 3.0, 0.02)]:
        expected = flag_spikes(values, window=window, ratio=ratio, min_jump=min_jump)
        got = incremental_flags(values, window=window, ratio=ratio, min_jump=min_jump)
        np.testing.assert_array_equal(got, expected)
    assert flag_spikes(values).sum() >= 4  # the sequence does exercise the rule
    short = np.array([1.0, 5.0, 9.0, 40.0])
    np.testing.assert_array_equal(incremental_flags(short), flag_spikes(short))


# ---------------------------------------------------------------- (b) a planted spike, flagged at its step


def _binary_data(n=320, d=4, batch=16, planted=15, seed=0):
    """Separable binary data; batch `planted` (with shuffle=False) looks like class 0 but is all labelled 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.float32)
    x = ((2 * y - 1)[:, None] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    sl = slice(planted * batch, (planted + 1) * batch)
    x[sl] = (-1 + 0.5 * rng.normal(size=(batch, d))).astype(np.float32)
    y[sl] = 1.0
    return x, y


def _logistic(d=4, seed=0, lr=0.05, **compile_kw):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(inp))
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy", **compile_kw)
    return model


def test_planted_spike_is_flagged_with_its_positives(capsys):
    batch, planted = 16, 15
    x, y = _binary_data(batch=batch, planted=planted)
    steps = len(x) // batch
    model = _logistic()
    n_vars = len(model.variables)
    cb = DiagnoseCallback(verbose=2)
    history = model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0, callbacks=[cb])

    assert [s["step"] for s in cb.spikes] == [planted, steps + planted]
    for epoch, s in enumerate(cb.spikes):
        assert (s["epoch"], s["batch"]) == (epoch, planted)
        assert s["positives"] == batch and s["samples"] == batch
        assert s["loss"] >= 3 * s["reference"] and s["loss"] - s["reference"] >= 0.02
        assert s["loss"] == cb.batch_losses[s["step"]]
    expected_pos = y.reshape(steps, batch).sum(axis=1)
    np.testing.assert_array_equal(cb.batch_positives, np.tile(expected_pos, 2))
    np.testing.assert_array_equal(cb.batch_sizes, np.full(2 * steps, batch))
    np.testing.assert_array_equal(cb.batch_epochs, np.repeat([0, 1], steps))
    np.testing.assert_array_equal(flag_spikes(cb.batch_losses).nonzero()[0], [s["step"] for s in cb.spikes])
    out = capsys.readouterr().out
    assert out.count("loss spike at epoch") == 2 and f"{batch} positive label(s) in {batch} samples" in out

    # the wrapper is gone, nothing was added to the model or to what fit reports
    assert "train_step" not in vars(model) and len(model.variables) == n_vars
    assert set(history.history) == {"loss"}
    again = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    assert set(again.history) == {"loss"}


# ---------------------------------------------------------------- (c) recovered losses = the raw batch losses


def _tagger(t=6, seed=1, **compile_kw):
    """Per-timestep binary tagger (N, T, 1) -> (N, T, 1) whose train_step logs its raw batch loss."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((t, 1))
    h = keras.layers.Dense(4, activation="tanh")(inp)
    model = RawLossModel(inp, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="binary_crossentropy", **compile_kw)
    return model


def _timestep_data(n=150, t=6, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, 1)).astype(np.float32)
    y = (x[..., 0] + 0.8 * rng.normal(size=(n, t)) > 1.0).astype(np.float32)[..., None]
    w = np.where(y[..., 0] > 0.5, 4.0, 1.0).astype(np.float32) * rng.uniform(0.5, 1.5, size=(n, t)).astype(
        np.float32)
    return x, y, w


def test_recovered_losses_equal_raw_batch_losses_with_weights_and_a_partial_batch():
    x, y, w = _timestep_data()
    batch = 32                                       # 150 = 4 x 32 + 22: the last batch is partial
    model = _tagger()
    raw = LogRecorder("raw_batch_loss")
    cb = DiagnoseCallback(verbose=0)
    model.fit(x, y, sample_weight=w, batch_size=batch, epochs=2, shuffle=False, verbose=0, callbacks=[cb, raw])

    np.testing.assert_allclose(cb.batch_losses, raw.values, rtol=1e-5)
    sizes = [32, 32, 32, 32, 22]
    np.testing.assert_array_equal(cb.batch_sizes, sizes * 2)
    ends = np.cumsum(sizes)
    positives = [y[e - s:e].sum() for s, e in zip(sizes, ends)]
    np.testing.assert_array_equal(cb.batch_positives, positives * 2)
    assert "train_step" not in vars(model) and type(model).train_step is RawLossModel.train_step


def test_steps_per_execution_gives_block_means():
    """steps_per_execution=2: one entry per block of 2 batches, its size-weighted mean loss and totals."""
    x, y, w = _timestep_data()
    batch, sizes = 32, np.array([32, 32, 32, 32, 22])
    one = _tagger()
    init = one.get_weights()
    cb1 = DiagnoseCallback(verbose=0)
    one.fit(x, y, sample_weight=w, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[cb1])
    two = _tagger(steps_per_execution=2)
    two.set_weights(init)
    cb2 = DiagnoseCallback(verbose=0)
    two.fit(x, y, sample_weight=w, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[cb2])

    blocks = [[0, 1], [2, 3], [4]]
    expected = [np.average(cb1.batch_losses[b], weights=sizes[b]) for b in blocks]
    np.testing.assert_allclose(cb2.batch_losses, expected, rtol=1e-4)
    np.testing.assert_array_equal(cb2.batch_sizes, [64, 64, 22])
    np.testing.assert_array_equal(cb2.batch_positives, [cb1.batch_positives[b].sum() for b in blocks])
    assert cb2.spikes == []          # three entries: too few for a reference (MIN_POINTS = 3)


def test_step_counts_exact_with_a_partial_block():
    x, y, _ = _timestep_data(n=160)                  # 5 full batches of 32: blocks of 2, 2, 1
    model = _tagger(steps_per_execution=2)
    cb = DiagnoseCallback(verbose=0, spike_ratio=0.0, spike_min_jump=-np.inf)
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, callbacks=[cb])
    # entries 3.. have a reference; with ratio 0 every one is flagged; "step" = the block's last batch
    assert [s["step"] for s in cb.spikes] == [6, 8, 9, 11, 13, 14]
    assert [s["batch"] for s in cb.spikes] == [1, 3, 5, 1, 3, 5]  # fit passes begin + 2 - 1, even past the end


# ---------------------------------------------------------------- the BN-check plumbing (a stand-in diagnose)


class _FakeDiag:
    calls: list = []

    def __init__(self, model, arrays, **kw):
        self.codes = ["bn_stale"]
        self.report = {"findings": [], "bn_statistics": {"metric_as_stored": 0.5, "metric_recomputed": 0.9,
                                                        "improves": True, "worst_layer": "bn"}}
        _FakeDiag.calls.append(("diagnose", {k: np.shape(v) for k, v in arrays.items()}, kw))

    def apply_fix(self):
        _FakeDiag.calls.append(("apply_fix",))
        return True


@pytest.fixture
def fake_diagnose(monkeypatch):
    import helpers.diagnose as package
    _FakeDiag.calls = []
    monkeypatch.setattr(package, "diagnose", _FakeDiag, raising=False)
    return _FakeDiag


def test_bn_check_schedule_and_recompute_choice(fake_diagnose, capsys):
    x, y = _binary_data(n=64, planted=1)
    model = _logistic()
    cb = DiagnoseCallback(x, y, validation_data=(x[:40], y[:40]), every_n_epochs=2, max_examples=50,
                          watch_spikes=False)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[cb])
    assert [r["epoch"] for r in cb.results] == [1, 2]          # after epoch 2, and at the end
    assert all(r["recomputed"] and r["codes"] == ["bn_stale"] for r in cb.results)
    assert cb.results[0]["metric_as_stored"] == 0.5 and cb.results[0]["metric_recomputed"] == 0.9
    first = fake_diagnose.calls[0]
    assert first[1] == {"x_train": (50, 4), "y_train": (50,), "x_test": (40, 4), "y_test": (40,)}
    assert first[2] == {"only": ["bn"], "progress": False, "plots": False}
    cb = DiagnoseCallback(x, y, validation_data=(x, y), batch_size=32, verbose=0)
    cb.set_model(model)
    cb.run_bn_check(0)
    assert fake_diagnose.calls[-2][2]["batch_size"] == 32
    assert [c[0] for c in fake_diagnose.calls] == ["diagnose", "apply_fix"] * 3
    assert capsys.readouterr().out.count("BN check after epoch") == 2

    fake_diagnose.calls = []
    cb = DiagnoseCallback(x, y, validation_data=(x, y), every_n_epochs=2, recompute="never", verbose=0)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[cb])
    assert [r["epoch"] for r in cb.results] == [1, 3]          # no second check of the last epoch
    assert [c[0] for c in fake_diagnose.calls] == ["diagnose", "diagnose"]
    assert not any(r["recomputed"] for r in cb.results)


def test_a_failing_check_is_recorded_not_raised(monkeypatch):
    import helpers.diagnose as package

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(package, "diagnose", broken, raising=False)
    x, y = _binary_data(n=64, planted=1)
    cb = DiagnoseCallback(x, y, validation_data=(x, y), verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _logistic().fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    assert cb.results[0]["error"] == "RuntimeError: boom" and cb.results[0]["recomputed"] is False
    assert any("BN check after epoch 1 failed" in str(w.message) for w in caught)


@pytest.mark.parametrize("kw, name", [({"recompute": "always"}, "recompute"),
                                      ({"every_n_epochs": 0}, "every_n_epochs"),
                                      ({"x_train": np.zeros((2, 1))}, "x_train and y_train"),
                                      ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(2)}, "validation_data"),
                                      ({"every_n_epochs": 2}, "every_n_epochs"),
                                      ({"batch_size": 1}, "batch_size")])
def test_bad_arguments_name_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        DiagnoseCallback(**kw)


# ---------------------------------------------------------------- (d) the BN check with the real diagnose


def _model_diagnose_or_reason():
    try:
        from helpers.diagnose import diagnose
    except ImportError as exc:
        return None, f"helpers.diagnose.diagnose is not importable yet ({exc})"
    try:
        params = inspect.signature(diagnose).parameters
    except (TypeError, ValueError):
        return diagnose, None
    kinds = {p.kind for p in params.values()}
    if not ({"only", "progress", "plots"} <= set(params) or inspect.Parameter.VAR_KEYWORD in kinds):
        return None, f"helpers.diagnose.diagnose{inspect.signature(diagnose)} does not take a model object yet"
    first = next(iter(params), "")
    if "path" in first or "file" in first:
        return None, f"helpers.diagnose.diagnose({first}, ...) still takes a file, not a model object"
    return diagnose, None


def _bn_data(n, d=6, classes=3, seed=0, shift=3.0, scale=5.0):
    """Separable classes with features far from BN's initial statistics (mean 3, std ~10)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = np.random.default_rng(99).normal(size=(classes, d)) * 2
    x = (shift + scale * (centres[y] + 0.3 * rng.normal(size=(n, d)))).astype(np.float32)
    return x, y.astype(np.int32)


def _bn_mlp(d=6, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    h = keras.layers.Dense(8, use_bias=False)(inp)
    h = keras.layers.BatchNormalization(momentum=0.99, name="bn")(h)
    h = keras.layers.ReLU()(h)
    model = keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


class _BNSnapshot(keras.callbacks.Callback):
    """Before DiagnoseCallback in the list: the moving statistics and validation accuracy fit left."""

    def __init__(self, xv, yv):
        super().__init__()
        self.xv, self.yv = xv, yv

    def on_train_end(self, logs=None):
        self.stats = _bn_stats(self.model)
        self.accuracy = _accuracy(self.model, self.xv, self.yv)


def _bn_stats(model):
    bn = model.get_layer("bn")
    return [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


@pytest.mark.parametrize("recompute", ["if_better", "never"])
def test_bn_check_recomputes_stale_statistics_only_if_asked(recompute):
    diagnose, reason = _model_diagnose_or_reason()
    if diagnose is None:
        pytest.skip(reason)
    x, y = _bn_data(512)
    xv, yv = _bn_data(256, seed=1)
    model = _bn_mlp()
    snap = _BNSnapshot(xv, yv)
    cb = DiagnoseCallback(x, y, validation_data=(xv, yv), recompute=recompute, watch_spikes=False, verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[snap, cb])   # 16 steps at momentum 0.99

    (row,) = cb.results
    assert "error" not in row, row
    assert "bn_stale" in row["codes"], row
    assert row["metric_recomputed"] > row["metric_as_stored"]
    after = _bn_stats(model)
    if recompute == "if_better":
        assert row["recomputed"] is True
        assert not np.allclose(after[0], snap.stats[0]) and not np.allclose(after[1], snap.stats[1])
        assert _accuracy(model, xv, yv) >= snap.accuracy
    else:
        assert row["recomputed"] is False
        for a, b in zip(after, snap.stats):
            np.testing.assert_array_equal(a, b)
        assert _accuracy(model, xv, yv) == snap.accuracy
