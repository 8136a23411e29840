"""helpers.diagnose (the package) on tiny models built here: the report.json schema, each check flagging
what it should and nothing else, the Python API's inputs, the fix rule, and the report writers.

Held-out architectures (MobileNet, ResNet, frozen BN, uint8 input, custom layers, ...) are the zoo's
(tests/unit/test_diagnose_zoo.py); the command line is tests/test_diagnose_cli.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat

import nbformat
import numpy as np
import pytest

from helpers import diagnose as D
from helpers.diagnose import codes as C
from helpers.diagnose import inputs as I
from helpers.diagnose import report as R
from helpers.workbook.environment import quiet_tensorflow
from helpers.workbook.notebooks import REPO_ROOT

quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers.diagnose import checks  # noqa: E402

TOP_LEVEL_KEYS = {"schema_version", "verdict", "model", "data", "checks_run", "thresholds", "findings",
                  "bn_statistics", "batch1", "gap", "noise", "timestep"}


# ---------------------------------------------------------------- tiny models and data


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


def _stale_model():
    """One epoch at batch 32 and momentum 0.99: the weights learn (held-out accuracy ~0.6 with exact
    statistics, chance ~0.38) while the moving statistics have moved ~8 % of the way from (0, 1)."""
    x, y = _data()
    model = _bn_mlp()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return model


def _arrays(x, y, x_test=None, y_test=None, **extra):
    return dict(x_train=x, y_train=y, x_test=x if x_test is None else x_test,
                y_test=y if y_test is None else y_test, **extra)


def _save(tmp_path, model, x, y, *, name="m", suffix=".keras", **kw):
    model_path, data_path = tmp_path / f"{name}{suffix}", tmp_path / f"{name}.npz"
    model.save(model_path)
    np.savez(data_path, **_arrays(x, y, **kw))
    return model_path, data_path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bn_state(model):
    return [np.array(v) for v in model.non_trainable_variables]


@pytest.fixture(scope="module")
def stale_files(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("stale"), _stale_model(), *_data())


@pytest.fixture(scope="module")
def stale(stale_files):
    """Every check, with plots."""
    return D.diagnose(*stale_files, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    """Full-batch training at momentum 0.5 for 40 steps: the moving statistics follow the population."""
    x, y = _data()
    model = _bn_mlp(momentum=0.5)
    model.fit(x, y, batch_size=len(x), epochs=40, verbose=0, shuffle=False)
    files = _save(tmp_path_factory.mktemp("healthy"), model, x, y)
    return D.diagnose(*files, only=["bn", "gap"], progress=False, plots=False)


# ---------------------------------------------------------------- the codes and the schema


def test_codes_table_is_consistent():
    for code, (severity, meaning, lesson) in C.CODES.items():
        assert severity in C.SEVERITIES, code
        assert lesson in C.LESSONS, code
        assert meaning and "\n" not in meaning, code
    assert "SCHEMA_VERSION" not in C.THRESHOLDS
    assert C.THRESHOLDS["APPLIED_TOLERANCE"] == C.APPLIED_TOLERANCE


def test_each_lesson_is_an_existing_notebook_section():
    for key, (notebook, heading) in C.LESSONS.items():
        nb = nbformat.read(REPO_ROOT / "notebooks" / notebook, as_version=4)
        headings = {line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("#")}
        assert heading in headings, f"{key}: {notebook} has no section {heading!r}"


def test_parse_fail_on_codes_and_severities():
    errors = tuple(c for c, (sev, _, _) in C.CODES.items() if sev == "error")
    warnings = tuple(c for c, (sev, _, _) in C.CODES.items() if sev == "warning")
    assert C.parse_fail_on("error") == errors and "bn_stale" in errors
    assert set(C.parse_fail_on("warning")) == set(errors + warnings)
    assert set(C.parse_fail_on("info")) == set(C.CODES)
    assert C.parse_fail_on(" bn_stale , input_scale ") == ("bn_stale", "input_scale")
    assert C.parse_fail_on("bn_stale,error").count("bn_stale") == 1          # no duplicates
    with pytest.raises(ValueError, match="unknown code 'nope'"):
        C.parse_fail_on("bn_stale,nope")
    with pytest.raises(ValueError, match="expected one or more"):
        C.parse_fail_on(" , ")


def test_report_follows_the_schema(stale):
    r = stale.report
    assert set(r) == TOP_LEVEL_KEYS
    assert r["schema_version"] == C.SCHEMA_VERSION
    assert isinstance(r["verdict"], str) and r["verdict"].strip() and "\n" not in r["verdict"]
    assert r["checks_run"] == list(C.CHECKS)
    assert r["thresholds"] == C.THRESHOLDS
    assert r["model"]["bn_layers"] == 1 and r["model"]["frozen_bn_layers"] == 0
    assert r["data"]["task"] == "classes" and r["data"]["metric"] == "accuracy"
    assert r["findings"], "every run has at least one finding"
    for f in r["findings"]:
        assert f["code"] in C.CODES, f
        severity, _, lesson = C.CODES[f["code"]]
        assert f["severity"] == severity, f
        assert isinstance(f["message"], str) and f["message"].strip(), f
        assert f["lesson"] == dict(zip(("notebook", "section"), C.LESSONS[lesson])), f
        assert (REPO_ROOT / "notebooks" / f["lesson"]["notebook"]).is_file(), f
    assert stale.codes == [f["code"] for f in r["findings"]]
    assert stale.finding(stale.codes[0]) is r["findings"][0] and stale.finding("no_such_code") is None


def test_report_json_is_strict_json(stale):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    text = R.report_json(stale)
    assert json.loads(text, parse_constant=refuse) == json.loads(json.dumps(R.jsonable(stale.report)))


def test_verdict_names_the_problems(stale, healthy):
    assert "problem(s)" in stale.report["verdict"]
    assert "bn_stale (error)" in stale.report["verdict"]
    assert "error" not in healthy.report["verdict"] and "bn_stale" not in healthy.report["verdict"]


# ---------------------------------------------------------------- the BN check


def test_stale_statistics_are_flagged(stale):
    bn = stale.report["bn_statistics"]
    f = stale.finding("bn_stale")
    assert f is not None and f["severity"] == "error", stale.codes
    assert f["worst_layer"] == "bn" and f["off_layers"] == ["bn"]
    assert bn["improves"] is True and bn["worsens"] is False
    assert bn["metric_recomputed"] > bn["metric_as_stored"]
    assert bn["metric_change"] > C.IMPROVEMENT_SE * bn["metric_change_se"]
    assert bn["layers"][0]["off"] and bn["layers"][0]["error_p90"] > C.APPLIED_TOLERANCE
    assert "model_untrained" not in stale.codes and "bn_current" not in stale.codes
    assert stale.fix_allowed


def test_healthy_statistics_are_not_flagged(healthy, tmp_path):
    bn = healthy.report["bn_statistics"]
    assert "bn_current" in healthy.codes, healthy.codes
    assert not {"bn_stale", "bn_mismatch_no_gain", "bn_small_batch_bias", "model_untrained"} & set(healthy.codes)
    assert bn["off_layers"] == [] and bn["worst_layer"] is None
    assert not any(f["severity"] == "error" for f in healthy.report["findings"])
    assert not healthy.fix_allowed
    assert healthy.fix(tmp_path / "fixed.keras") is None
    assert not (tmp_path / "fixed.keras").exists() and list(tmp_path.iterdir()) == []
    assert healthy.fix_reason


def test_fix_writes_a_recalibrated_copy_and_leaves_the_model_alone(stale, stale_files, tmp_path):
    """diag.fix writes (only) when fix_allowed; the copy is no longer stale and its stored metric is the first
    diagnosis's recomputed one; neither the model file nor the model in memory changes."""
    model_path, data_path = stale_files
    before_file, before_state = _sha(model_path), _bn_state(stale.inputs.model)
    assert stale.fix_allowed
    with pytest.raises(D.DiagnoseError, match=r"\.keras"):
        stale.fix(tmp_path / "fixed.h5")
    fixed = stale.fix(tmp_path / "fixed.keras")
    assert fixed == tmp_path / "fixed.keras" and fixed.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.keras"]      # no temporary file left
    assert _sha(model_path) == before_file
    for a, b in zip(before_state, _bn_state(stale.inputs.model)):
        np.testing.assert_array_equal(a, b)
    again = D.diagnose(fixed, data_path, only=["bn"], progress=False, plots=False)
    assert "bn_stale" not in again.codes and "bn_current" in again.codes, again.codes
    assert again.report["bn_statistics"]["metric_as_stored"] == pytest.approx(
        stale.report["bn_statistics"]["metric_recomputed"], abs=1e-9)


def test_model_file_untouched_and_bn_state_as_loaded(stale_files):
    model_path, data_path = stale_files
    before = _sha(model_path)
    diag = D.diagnose(model_path, data_path, batch_size=32, progress=False, plots=False)
    assert _sha(model_path) == before
    fresh = keras.saving.load_model(model_path)
    for a, b in zip(_bn_state(diag.inputs.model), _bn_state(fresh)):
        np.testing.assert_array_equal(a, b)


def test_model_without_bn(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(0)
    inp = keras.Input((x.shape[1],))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, "relu")(inp)))
    diag = D.diagnose(model, _arrays(x, y), only=["bn", "batch1", "gap"], progress=False)
    r = diag.report
    assert "no_bn" in diag.codes and r["model"]["bn_layers"] == 0
    assert r["bn_statistics"] is None and r["timestep"] is None and r["noise"] is None
    assert r["batch1"]["training_mode_constant_layers"] is None and r["batch1"]["match"]
    # without BN or dropout both modes give the same predictions, so the same metric
    assert r["gap"]["train_metric_training_mode"] == r["gap"]["train_metric_inference_mode"]
    assert "gap_mode_mismatch" not in diag.codes
    assert not diag.fix_allowed and diag.fix_reason
    assert "null" in diag.markdown and "<html>" in diag.html


def test_nested_bn_layers_are_counted_and_checked():
    """A BN layer inside a nested model is found and its statistics recomputed (through the call tap)."""
    x, y = _data()
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((x.shape[1],))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(keras.layers.Dense(8)(inner_in)),
                        name="inner")
    inp = keras.Input((x.shape[1],))
    h = keras.layers.BatchNormalization(name="outer_bn")(inner(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    diag = D.diagnose(model, _arrays(x, y), only=["bn"], progress=False, plots=False)
    bn = diag.report["bn_statistics"]
    assert diag.report["model"]["bn_layers"] == 2 and bn["layers_checked"] == 2
    assert [row["name"] for row in bn["layers"]] == ["inner_bn", "outer_bn"]
    assert bn["off_layers"], "initial statistics (0, 1) on data of mean 3, variance ~100"
    assert diag.report["checks_run"] == ["bn"]
    assert diag.report["batch1"] is None and diag.report["gap"] is None and diag.report["noise"] is None


def test_precise_statistics_are_the_lessons_precise_bn():
    """The BN check's precise statistics equal precise BN (layer by layer, earlier layers corrected), its local
    ones equal statistics of the layer inputs computed in one piece, and the stored statistics are put back."""
    from helpers.batchnorm import (batch_statistics, bn_layers, moving_statistics, population_statistics,
                                   precise_bn, preserved_bn_state)
    from helpers.diagnose.bn import exact_statistics
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
    stored = moving_statistics(model)
    with preserved_bn_state(model):
        expected = precise_bn(model, x, batch_size=300)
    precise, local, *_ = exact_statistics(model, layers, x)
    assert local is None                            # only computed when a layer is frozen
    for (m1, v1), (m2, v2) in zip(precise, expected):
        np.testing.assert_allclose(m1, m2, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(v1, v2, rtol=1e-3)
    layers[1].trainable = False                     # frozen: kept as stored; its row compares with its input
    precise, local, *_ = exact_statistics(model, layers, x)
    for (m1, v1), inputs in zip(local, whole):      # each layer's input with the stored statistics before it
        m2, v2 = batch_statistics(np.asarray(inputs), unbiased=True)
        np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(precise[0][1], expected[0][1], rtol=1e-3)
    np.testing.assert_array_equal(precise[1][1], stored[1][1])
    layers[1].trainable = True
    for (m1, v1), (m2, v2) in zip(moving_statistics(model), stored):
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(v1, v2)


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


def test_stale_model_is_not_called_untrained_when_the_bn_check_is_skipped(stale):
    assert "model_untrained" not in stale.codes          # the full run: recomputing reaches ~0.6 (chance ~0.38)
    diag = D.diagnose(stale.inputs.model, _arrays(*_data()), only=["gap"], progress=False, plots=False)
    assert "model_untrained" not in diag.codes, diag.report["findings"][0]["message"]


# ---------------------------------------------------------------- batch 1 and the gap


def test_stale_model_batch1_matches_and_gap_is_the_mode(stale):
    b1, gap = stale.report["batch1"], stale.report["gap"]
    assert b1["match"] and b1["max_abs_diff_vs_batched"] < C.BATCH1_TOLERANCE
    assert "batch1_mismatch" not in stale.codes
    # fit reports training-mode accuracy (batch statistics); inference mode uses the stale moving ones
    assert gap["mode_mismatch"] == pytest.approx(gap["train_metric_training_mode"] - gap["train_metric_inference_mode"])
    assert "gap_mode_mismatch" in stale.codes
    assert gap["overfitting"] == pytest.approx(0.0)          # x_test is x_train here
    assert "gap_overfitting" not in stale.codes


def _bn_at_the_input(scale):
    """BN straight on the input, β = 0.1, γ = 1.3, fed inputs of the given scale."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.BatchNormalization(name="bn")(inp)))
    bn = model.get_layer("bn")
    bn.beta.assign(np.full(4, 0.1, np.float32))
    bn.gamma.assign(np.full(4, 1.3, np.float32))
    x = (scale * np.random.default_rng(0).normal(size=(64, 4))).astype(np.float32)
    return model, _arrays(x, (x[:, 0] > 0).astype(np.int32))


def test_bn_layer_constant_at_batch1_is_found():
    """A Dense BN layer at batch 1 in training mode normalizes one value by itself: it outputs β."""
    diag = D.diagnose(*_bn_at_the_input(1.0), only=["batch1"], progress=False, plots=False)
    assert diag.report["batch1"]["training_mode_constant_layers"] == ["bn"]
    assert "bn_constant_at_batch1" in diag.codes
    assert diag.finding("bn_constant_at_batch1")["severity"] == "warning"


def test_bn_layer_constant_at_batch1_is_found_for_large_inputs():
    diag = D.diagnose(*_bn_at_the_input(30.0), only=["batch1"], progress=False, plots=False)
    assert diag.report["batch1"]["training_mode_constant_layers"] == ["bn"]


# ---------------------------------------------------------------- gradient noise


def _assert_interval_holds(noise):
    lo, hi = noise["interval"]
    assert lo is not None and lo >= 0
    if noise["b_simple"] is not None:
        assert lo <= noise["b_simple"], noise
        assert hi is None or noise["b_simple"] <= hi, noise
    if hi is not None:
        assert lo <= hi


def test_noise_section_and_interval(stale):
    nz = stale.report["noise"]
    assert 2 <= nz["b_small"] <= 32 and nz["b_big"] == C.BIG_FACTOR * nz["b_small"] <= 256 // 2
    assert nz["batches"] == [C.SMALL_BATCHES, C.BIG_BATCHES]
    assert "sparse_categorical_crossentropy" in nz["loss"]          # the model's compiled loss
    _assert_interval_holds(nz)
    code = "noise_scale" if nz["resolved"] else "noise_unresolved"
    assert code in stale.codes and stale.finding(code)["interval"] == nz["interval"]


def test_resolved_noise_scale_suggests_a_power_of_two(stale_files, monkeypatch):
    """With the resolution rule relaxed (every finite interval counts), the suggested batch is the largest power
    of two ≤ min(B_simple, n), the finding is noise_scale, and the noise plot is drawn."""
    monkeypatch.setattr(checks, "NOISE_RESOLVED_FACTOR", 1e12)
    diag = D.diagnose(*stale_files, only=["noise"], progress=False)
    nz = diag.report["noise"]
    assert nz["resolved"], nz
    _assert_interval_holds(nz)
    s = nz["suggested_max_batch"]
    assert s & (s - 1) == 0 and s <= max(min(nz["b_simple"], diag.report["data"]["n_train"]), 1) < 2 * s
    assert "noise_scale" in diag.codes and "noise_unresolved" not in diag.codes
    assert diag.finding("noise_scale")["b_simple"] == nz["b_simple"]
    assert "noise" in diag.figures


def test_noise_interval_contains_the_estimate_when_noise_is_small():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 2)).astype(np.float32)
    y = (x @ rng.normal(size=2) * 3 + 5).astype(np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((2,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(loss="mse")
    diag = D.diagnose(model, _arrays(x, y), only=["noise"], batch_size=32, progress=False, plots=False)
    _assert_interval_holds(diag.report["noise"])


# ---------------------------------------------------------------- per-timestep labels


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


@pytest.mark.parametrize("targets", ["(N, T)", "(N, T, 1)"])
def test_per_timestep_targets_without_weights(targets):
    x, y = _series()
    diag = D.diagnose(_tagger(), _arrays(x, y if targets == "(N, T)" else y[..., None]), only=["timestep"],
                      progress=False, plots=False)
    ts, data = diag.report["timestep"], diag.report["data"]
    assert data["task"] == "timestep" and data["metric"] == "PR-AUC" and targets in data["label_form"]
    assert ts["positive_fraction"] == pytest.approx(y.mean())
    assert ts["balancing_positive_weight"] == pytest.approx((y.size - y.sum()) / y.sum())
    assert ts["weights_given"] == "none" and ts["positive_weight_share"] is None
    assert 0 < ts["pr_auc_test"] <= 1 and ts["pr_auc_constant_predictor"] == pytest.approx(y.mean())
    assert "timestep_no_weights" in diag.codes


def test_class_weight_trap_share_is_measured():
    """Two steps per series, the positive always at step 1, and what class_weight gives: one weight per series,
    w = neg/pos = 3 for the positive series. Both steps of a positive series get w, so the positives' share of the
    weight is w·P / (2·w·P + 2·P) = 3/8, not the balanced 1/2."""
    x, y = _series(t=2)
    y[:] = 0
    y[::2, 1] = 1.0
    w = np.where(y.max(axis=1) > 0, 3.0, 1.0).astype(np.float32)
    diag = D.diagnose(_tagger(t=2), _arrays(x, y, sample_weight_train=w), only=["timestep"], progress=False,
                      plots=False)
    ts = diag.report["timestep"]
    assert ts["weights_given"] == "per series (N,)" and ts["weights_constant_per_series"] is True
    assert ts["positive_weight_share"] == pytest.approx(0.375)
    f = diag.finding("timestep_class_weight_trap")
    assert f is not None and f["severity"] == "error" and f["share"] == pytest.approx(0.375)
    assert "37.5%" in f["message"]


# ---------------------------------------------------------------- what the Python API accepts


def test_in_memory_model_and_arrays_leave_its_bn_statistics_alone(tmp_path):
    model = _stale_model()
    x, y = _data()
    before = _bn_state(model)
    diag = D.diagnose(model, _arrays(x, y), progress=False, plots=False)
    assert diag.report["model"]["source"].startswith("<in-memory")
    assert diag.report["data"]["source"] == "arrays"
    assert "bn_stale" in diag.codes and diag.fix_allowed
    for a, b in zip(before, _bn_state(model)):
        np.testing.assert_array_equal(a, b)
    assert diag.fix(tmp_path / "sub" / "fixed.keras").is_file()
    for a, b in zip(before, _bn_state(model)):
        np.testing.assert_array_equal(a, b)


def test_tf_data_and_tuple_inputs_give_the_same_report(stale):
    x, y = _data()
    model = stale.inputs.model
    base = D.diagnose(model, _arrays(x, y), only=["bn"], progress=False, plots=False).report
    datasets = {"train": tf.data.Dataset.from_tensor_slices((x, y)).batch(32),      # batched
                "test": tf.data.Dataset.from_tensor_slices((x, y))}                 # unbatched
    for data in (datasets, (x, y, x, y)):
        r = D.diagnose(model, data, only=["bn"], progress=False, plots=False).report
        assert r["data"]["n_train"] == r["data"]["n_test"] == len(x)
        assert r["bn_statistics"]["metric_as_stored"] == base["bn_statistics"]["metric_as_stored"]
        assert r["bn_statistics"]["metric_recomputed"] == pytest.approx(base["bn_statistics"]["metric_recomputed"])
    assert r["data"]["source"] == "arrays"


def test_max_examples_subsamples_and_says_so(stale):
    x, y = _data()
    diag = D.diagnose(stale.inputs.model, _arrays(x, y), only=["gap"], max_examples=100, progress=False, plots=False)
    data = diag.report["data"]
    assert (data["n_train"], data["n_test"], data["n_train_given"], data["n_test_given"]) == (100, 100, 256, 256)
    assert "examples_capped" in diag.codes


@pytest.mark.parametrize("kwargs, words", [
    (dict(only=["nonsense"]), "unknown check"),
    (dict(only=["bn", "gapp"]), "unknown check"),
    (dict(batch_size=1), "batch size"),
    (dict(batch_size=True), "batch size"),
    (dict(max_examples=1), "max examples"),
    (dict(task="speech"), "task"),
])
def test_bad_arguments_are_refused(stale, kwargs, words):
    with pytest.raises(D.DiagnoseError, match=words):
        D.diagnose(stale.inputs.model, _arrays(*_data()), progress=False, **kwargs)


def test_regression_model_runs(tmp_path):
    """A model compiled with 'mse' and continuous targets: the metric is the mean squared error, lower is better."""
    x, _ = _data()
    y = (0.1 * x[:, 0] + 1.0).astype(np.float32)
    keras.utils.set_random_seed(0)
    inp = keras.Input((x.shape[1],))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile(optimizer="adam", loss="mse")
    diag = D.diagnose(model, _arrays(x, y), only=["bn", "gap", "noise"], progress=False, plots=False)
    data = diag.report["data"]
    assert (data["task"], data["metric"], data["higher_is_better"]) == ("regression", "mean squared error", False)
    assert diag.report["model"]["outputs_are_logits"] is False
    assert diag.report["bn_statistics"]["metric_as_stored"] >= 0
    assert diag.report["noise"]["b_small"] >= 2
    assert all(f["code"] in C.CODES for f in diag.report["findings"])


def test_soft_label_smoothed_targets_run():
    x, y = _data()
    soft = (np.eye(3)[y] * 0.9 + 0.1 / 3).astype(np.float32)
    model = _stale_model()
    diag = D.diagnose(model, _arrays(x, soft), only=["bn", "noise"], progress=False, plots=False)
    data = diag.report["data"]
    assert data["task"] == "classes" and "soft or label-smoothed" in data["label_form"]
    hard = D.diagnose(model, _arrays(x, y), only=["bn"], progress=False, plots=False)
    # accuracy against the argmax of the soft rows is accuracy against the hard labels
    assert diag.report["bn_statistics"]["metric_as_stored"] == hard.report["bn_statistics"]["metric_as_stored"]


def test_h5_model_loads(tmp_path):
    x, y = _data()
    model_path, data_path = _save(tmp_path, _stale_model(), x, y, suffix=".h5")
    before = _sha(model_path)
    diag = D.diagnose(model_path, data_path, only=["bn"], progress=False, plots=False)
    assert diag.report["model"]["bn_layers"] == 1 and "bn_stale" in diag.codes
    assert _sha(model_path) == before


def test_shorten_cuts_at_a_word_boundary():
    words = " ".join(f"word{i}" for i in range(200))
    short = I.shorten(words + "\nsecond line", 100)
    assert short.endswith(" …") and len(short) <= 102
    kept = short[:-2]
    assert words.startswith(kept) and words[len(kept)] == " "
    assert I.shorten("short message\nmore", 100) == "short message"
    # a load error quoted in a DiagnoseError keeps whole words
    message = I._why_not_loaded(REPO_ROOT / "m.keras", ValueError(words), unsafe=False)
    quoted = message.split("(ValueError: ", 1)[1].rstrip(")").removesuffix(" …")
    assert words.startswith(quoted) and words[len(quoted)] == " "


# ---------------------------------------------------------------- the report files


def test_write_report_moves_into_place(stale, tmp_path):
    out = D.write_report(stale, tmp_path / "out")
    assert out == tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(stale.figures) >= 2
    assert {"bn_statistics", "gap"} <= set(stale.figures)
    assert json.loads((out / "report.json").read_text()) == json.loads(R.report_json(stale))
    md = (out / "report.md").read_text()
    assert "## Findings" in md and "`bn_stale`" in md and stale.report["verdict"] in md
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    assert stale.write(out) == out                          # again, into the existing folder
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_report_failure_leaves_the_folder_as_it_was(stale, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("old")

    def broken(diag):
        raise RuntimeError("disk full")
    monkeypatch.setattr(R, "render_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        D.write_report(stale, out)
    assert [p.name for p in out.iterdir()] == ["report.json"] and (out / "report.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(RuntimeError):
        D.write_report(stale, tmp_path / "new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_report_links_the_lessons(stale):
    for f in stale.report["findings"]:
        link = R.lesson_link(f["lesson"]["notebook"], f["lesson"]["section"])
        assert link.startswith("file://") and f["lesson"]["notebook"] in link
        assert link.split("#", 1)[1] == f["lesson"]["section"].replace(" ", "-")
        assert link in stale.html or link.replace("&", "&amp;") in stale.html


def test_written_files_have_ordinary_permissions(stale, tmp_path):
    old = os.umask(0o022)
    try:
        out = D.write_report(stale, tmp_path / "out")
        fixed = stale.fix(tmp_path / "fixed.keras")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "report.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(fixed.stat().st_mode) == 0o644


@pytest.fixture(scope="module")
def digits_healthy():
    """A small digits CNN trained on x in [0, 1], its statistics recomputed exactly (healthy)."""
    from helpers.batchnorm import precise_bn
    from helpers.data import load_digits
    d = load_digits()
    keras.utils.set_random_seed(3)
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, use_bias=False), L.BatchNormalization(),
                              L.ReLU(), L.Flatten(), L.Dense(32, use_bias=False), L.BatchNormalization(), L.ReLU(),
                              L.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(d.x_train, d.y_train, epochs=5, batch_size=32, verbose=0)
    precise_bn(model, d.x_train)
    return model, d


@pytest.mark.parametrize("transform, expected", [
    (lambda x: x, None), (lambda x: 2 * x - 1, "(x + 1) / 2"), (lambda x: x * 255, "x / 255")])
def test_input_scale_is_found_and_blocks_the_recompute_advice(digits_healthy, transform, expected):
    """Data at another scale than the model was trained on (2x − 1, or 0–255, for a model trained on [0, 1]):
    recomputing the statistics on it would raise its held-out accuracy, but break the model for correctly
    scaled input, so the finding is input_scale with the rescaling that fits, never bn_stale or a fix."""
    model, d = digits_healthy
    diag = D.diagnose(model, _arrays(transform(d.x_train), d.y_train, transform(d.x_test), d.y_test),
                      only=["bn"], progress=False, plots=False)
    scale = diag.report["bn_statistics"]["input_scale"]
    assert scale["best_rescaling"] == expected, scale
    if expected is None:
        assert "input_scale" not in diag.codes and "bn_current" in diag.codes, diag.codes
    else:
        assert "input_scale" in diag.codes and "bn_stale" not in diag.codes, diag.codes
        assert not diag.fix_allowed and "input_scale" in diag.fix_reason


def test_markdown_tables_keep_their_columns(stale):
    """A '|' inside a message or a column name (|G|², |ln ratio|) is escaped: every row of each table has the
    header's number of cells."""
    tables, current = [], None
    for line in stale.markdown.splitlines():
        if line.startswith("|"):
            cells = len(re.split(r"(?<!\\)\|", line)) - 2
            current = current or []
            current.append(cells)
        elif current:
            tables.append(current)
            current = None
    assert len(tables) >= 3
    for counts in tables:
        assert set(counts) == {counts[0]}, counts
