"""helpers.diagnose on tiny models built here: each check flags what it should and nothing else."""
from __future__ import annotations

import hashlib
import json
import re

import nbformat
import numpy as np
import pytest

from helpers import diagnose as D
from helpers.workbook.environment import quiet_tensorflow
from helpers.workbook.notebooks import REPO_ROOT

quiet_tensorflow()
import keras  # noqa: E402


def _data(n=256, d=6, classes=3, seed=0, shift=3.0, scale=5.0):
    """Gaussian features far from BN's initial statistics (mean 0, variance 1); separable classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, d)) * 2
    x = (shift + scale * (centres[y] + 0.3 * rng.normal(size=(n, d)))).astype(np.float32)
    return x, y.astype(np.int32)


def _bn_mlp(d=6, classes=3, momentum=0.99, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((d,))
    h = keras.layers.Dense(8, use_bias=False)(inp)
    h = keras.layers.BatchNormalization(momentum=momentum, name="bn")(h)
    h = keras.layers.ReLU()(h)
    out = keras.layers.Dense(classes, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


def _save(tmp_path, model, x, y, *, x_test=None, y_test=None, name="m", **extra):
    model_path, data_path = tmp_path / f"{name}.keras", tmp_path / f"{name}.npz"
    model.save(model_path)
    np.savez(data_path, x_train=x, y_train=y, x_test=x if x_test is None else x_test,
             y_test=y if y_test is None else y_test, **extra)
    return model_path, data_path


@pytest.fixture(scope="module")
def stale_files(tmp_path_factory):
    """A BN model that has never updated its moving statistics (mean 0, variance 1) on data with
    mean 3 and variance ~100: the statistics are stale, the weights are fine."""
    tmp = tmp_path_factory.mktemp("stale")
    x, y = _data()
    return _save(tmp, _bn_mlp(), x, y)


@pytest.fixture(scope="module")
def stale(stale_files):
    return D.diagnose(*stale_files, batch_size=32, progress=False)


def test_report_has_exactly_the_issue_keys(stale):
    r = stale.report
    assert tuple(r) == D.REPORT_KEYS
    assert set(r["bn_statistics"]) == {"metric_as_stored", "metric_recomputed", "relative_variance_error", "stale"}
    assert set(r["batch1"]) == {"max_abs_diff_vs_batched", "training_mode_constant_layers"}
    assert set(r["gap"]) == {"train_metric_training_mode", "train_metric_inference_mode", "test_metric_inference_mode"}
    assert set(r["noise"]) == {"b_simple", "suggested_max_batch"}
    json.dumps(D._jsonable(r))  # serializable as report.json


def test_stale_statistics_are_flagged(stale):
    bn = stale.report["bn_statistics"]
    assert stale.report["bn_layers"] == 1
    assert bn["stale"] is True
    assert bn["relative_variance_error"]["bn"] > D.STALE_VARIANCE_ERROR
    assert any("stale" in f for f in stale.report["findings"])


def test_stale_model_batch1_layer_constant_and_matching_inference(stale):
    # a Dense BN layer at batch 1 in training mode normalizes one value by itself: output β
    assert stale.report["batch1"]["training_mode_constant_layers"] == ["bn"]
    assert stale.report["batch1"]["max_abs_diff_vs_batched"] < D.BATCH1_TOLERANCE


def test_bn_state_restored_and_model_file_untouched(stale_files):
    model_path, data_path = stale_files
    before = hashlib.sha256(model_path.read_bytes()).hexdigest()
    diag = D.diagnose(model_path, data_path, batch_size=32, progress=False, plots=False)
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == before
    fresh = keras.saving.load_model(model_path)
    for a, b in zip(diag.inputs.model.non_trainable_variables, fresh.non_trainable_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_converged_model_is_not_flagged(tmp_path):
    """Full-batch training at momentum 0.5 for 40 steps: the moving statistics follow the population."""
    x, y = _data()
    model = _bn_mlp(momentum=0.5)
    model.fit(x, y, batch_size=len(x), epochs=40, verbose=0, shuffle=False)
    diag = D.diagnose(*_save(tmp_path, model, x, y), batch_size=32, progress=False, plots=False)
    bn = diag.report["bn_statistics"]
    assert bn["stale"] is False, bn
    assert bn["relative_variance_error"]["bn"] < D.STALE_VARIANCE_ERROR
    assert abs(bn["metric_recomputed"] - bn["metric_as_stored"]) <= D.STALE_METRIC_CHANGE


def test_recomputing_fixes_the_stale_model(stale, tmp_path, stale_files):
    """Precise BN applied and saved: the diagnosis of the saved copy is no longer stale, and its stored
    metric is the first diagnosis's recomputed one."""
    from helpers.batchnorm import precise_bn
    model_path, data_path = stale_files
    model = keras.saving.load_model(model_path)
    with np.load(data_path) as f:
        x = f["x_train"]
    precise_bn(model, x)
    fixed = tmp_path / "fixed.keras"
    model.save(fixed)
    again = D.diagnose(fixed, data_path, progress=False, plots=False).report["bn_statistics"]
    assert again["stale"] is False
    assert again["metric_as_stored"] == pytest.approx(stale.report["bn_statistics"]["metric_recomputed"], abs=1e-9)


def test_model_without_bn_gets_zero_and_nulls(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(0)
    inp = keras.Input((x.shape[1],))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, "relu")(inp)))
    diag = D.diagnose(*_save(tmp_path, model, x, y), progress=False)
    r = diag.report
    assert r["bn_layers"] == 0
    assert r["bn_statistics"] is None and r["timestep"] is None
    assert r["batch1"]["training_mode_constant_layers"] is None
    # without BN or dropout both modes give the same predictions, so the same metric
    assert r["gap"]["train_metric_training_mode"] == r["gap"]["train_metric_inference_mode"]
    assert any("no BatchNormalization" in f for f in r["findings"])
    assert "null" in diag.markdown and "<html>" in diag.html


def test_nested_bn_layers_are_counted_and_checked(tmp_path):
    """A BN layer inside a nested model is found and its statistics recomputed (through the call tap)."""
    x, y = _data()
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((x.shape[1],))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(keras.layers.Dense(8)(inner_in)),
                        name="inner")
    inp = keras.Input((x.shape[1],))
    h = keras.layers.BatchNormalization(name="outer_bn")(inner(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    diag = D.diagnose(*_save(tmp_path, model, x, y), only=["bn"], progress=False, plots=False)
    bn = diag.report["bn_statistics"]
    assert diag.report["bn_layers"] == 2
    assert set(bn["relative_variance_error"]) == {"inner_bn", "outer_bn"}
    assert bn["stale"] is True
    assert diag.report["batch1"] is None and diag.report["gap"] is None  # not run (--only bn)


def _tagger(t=16):
    keras.utils.set_random_seed(0)
    inp = keras.Input((t, 2))
    h = keras.layers.Dense(4, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))


def _series(n=64, t=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, 2)).astype(np.float32)
    y = np.zeros((n, t), np.float32)
    for i in range(0, n, 2):                   # every other series: one positive step, anywhere
        y[i, rng.integers(0, t)] = 1.0
    x[..., 0] += 3 * y
    return x, y


def test_per_timestep_targets_set_the_class_weight_trap(tmp_path):
    x, y = _series()
    diag = D.diagnose(*_save(tmp_path, _tagger(), x, y), progress=False)
    ts = diag.report["timestep"]
    assert ts["class_weight_trap"] is True
    assert ts["positive_fraction"] == pytest.approx(y.mean())
    assert ts["suggested_positive_weight"] == pytest.approx((y.size - y.sum()) / y.sum())
    assert 0 < ts["pr_auc_test"] <= 1
    assert diag.details["kind"] == "timestep"


def test_three_dimensional_timestep_targets(tmp_path):
    x, y = _series()
    diag = D.diagnose(*_save(tmp_path, _tagger(), x, y[..., None]), only=["timestep"], progress=False)
    assert diag.report["timestep"]["class_weight_trap"] is True
    assert "Keras refuses class_weight" in " ".join(diag.report["findings"])


def test_class_weight_trap_share_is_measured(tmp_path):
    """Two steps per series, the positive always at step 1: Keras's argmax 'class' is then right for every
    series, yet it weights both steps of a positive series, so the positives' share of the weight is
    w·P / (2·w·P + 2·P) = 3/8 with w = neg/pos = 3, not the per-step 1/2: 25% off, a trap."""
    x, y = _series(t=2)
    y[:] = 0
    y[::2, 1] = 1.0
    diag = D.diagnose(*_save(tmp_path, _tagger(t=2), x, y), only=["timestep"], progress=False)
    text = " ".join(diag.report["findings"])
    assert "carry 37.5% of the total weight instead of the per-step weighting's 50.0%" in text
    assert diag.report["timestep"]["class_weight_trap"] is True


def test_noise_scale_positive_for_an_untrained_model(tmp_path):
    """Far from a minimum the full gradient dominates: B_simple is finite and the suggested batch is the
    largest power of two below it."""
    x, y = _data(n=2048)
    diag = D.diagnose(*_save(tmp_path, _bn_mlp(), x, y), only=["noise"], progress=False)
    noise = diag.report["noise"]
    assert noise["b_simple"] is not None and noise["b_simple"] > 0
    s = noise["suggested_max_batch"]
    assert s <= max(min(noise["b_simple"], 2048), 1) < 2 * s
    assert s & (s - 1) == 0
    assert "noise" in diag.figures


def test_each_finding_links_an_existing_lesson_section():
    for key, (notebook, heading) in D.LESSONS.items():
        nb = nbformat.read(REPO_ROOT / "notebooks" / notebook, as_version=4)
        headings = {l.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                    for l in c.source.splitlines() if l.startswith("#")}
        assert heading in headings, f"{key}: {notebook} has no section {heading!r}"


@pytest.mark.parametrize("only", [["nonsense"], ["bn", "gapp"]])
def test_unknown_check_names_are_refused(stale_files, only):
    with pytest.raises(D.DiagnoseError, match="unknown check"):
        D.diagnose(*stale_files, only=only, progress=False)


def test_write_report_moves_into_place(stale, tmp_path):
    out = D.write_report(stale, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert json.loads((out / "report.json").read_text())["bn_statistics"]["stale"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it


def test_diagnosis_statistics_are_the_lessons_precise_bn():
    """The diagnosis uses the lessons' streamed population statistics; they must equal statistics of
    the layer inputs computed in one piece, and precise BN, for conv and dense BN layers alike."""
    from helpers.batchnorm import (batch_statistics, bn_layers, population_statistics, precise_bn,
                                   preserved_bn_state, relative_error)
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.BatchNormalization(name="c")(keras.layers.Conv2D(4, 3)(inp))
    h = keras.layers.BatchNormalization(name="d")(keras.layers.Dense(5)(keras.layers.Flatten()(h)))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    x = (2 + 3 * np.random.default_rng(0).normal(size=(300, 6, 6, 2))).astype(np.float32)
    layers = bn_layers(model)
    whole = keras.Model(inp, [l.input for l in layers])(x, training=False)   # every input at once
    for (m1, v1), inputs in zip(population_statistics(model, x, batch_size=64), whole):
        m2, v2 = batch_statistics(np.asarray(inputs), unbiased=True)
        np.testing.assert_allclose(m1, m2, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(v1, v2, rtol=1e-6)
    stored = [np.array(l.moving_variance) for l in layers]
    with preserved_bn_state(model):
        expected = [(np.asarray(m), np.asarray(v)) for m, v in precise_bn(model, x, batch_size=300)]
    errors, assigned = D.precise_statistics(model, x, batch_size=64)
    # layer "c" sees no BN before it: its error is the stored variance against its one-piece statistics
    assert errors["c"] == pytest.approx(relative_error(stored[0], batch_statistics(np.asarray(whole[0]), unbiased=True)[1]))
    for (m1, v1), (m2, v2), layer in zip(assigned, expected, layers):
        np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(layer.moving_variance), v2, rtol=1e-5)


def test_population_statistics_reach_bn_inside_a_nested_model():
    from helpers.batchnorm import batch_statistics, bn_layers, population_statistics
    keras.utils.set_random_seed(2)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), inner, keras.layers.Dense(2)])
    x = np.random.default_rng(3).normal(1.0, 2.0, (200, 4)).astype(np.float32)
    (mean, var), = population_statistics(model, x, batch_size=32)
    pre_bn = inner.layers[0](model.layers[0](x))                    # the nested BN layer's input by hand
    m2, v2 = batch_statistics(np.asarray(pre_bn), unbiased=True)
    np.testing.assert_allclose(mean, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, v2, rtol=1e-5)
    assert len(bn_layers(model)) == 1