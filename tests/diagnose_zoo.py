"""A held-out zoo for helpers.diagnose: models and data the tool was not written against.

Each builder writes, into a given directory, a model file (or folder) and an .npz (x_train, y_train,
x_test, y_test[, sample_weight_train]) and returns a Case: what the diagnosis must report (expect),
what it must not (forbid: the wrong verdicts and the harmful advice), the BN layer it must name as
the worst (worst_layer), and the numbers that show the case is what it claims (premise: measured
here, directly, with helpers.batchnorm; a builder raises ZooPremiseError when its premise fails).

    python tests/diagnose_zoo.py OUT_DIR [CASE ...]     builds the zoo into OUT_DIR, writes manifest.json

The tests (tests/unit/test_diagnose_zoo.py) build it in a subprocess, so that the custom layer the
custom_layer case registers is not registered in the process that runs the diagnosis.
Everything is small (8x8 digits, tiny synthetic arrays) and seeded.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):                      # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.workbook.environment import quiet_tensorflow  # noqa: E402

CASE_NAMES = (
    "mobilenet_healthy", "nested_resnet_stale", "one_layer_variance_x1_5", "one_layer_variance_x4",
    "mean_shift_three_layers", "small_batch_dense_bn", "small_batch_dense_bn_momentum_0_9",
    "frozen_bn_transfer", "uint8_scale", "untrained_uncompiled", "tagger_weights_ok", "tagger_series_weights",
    "custom_layer", "lambda_layer", "regressor_mse_stale", "regressor_mse_healthy", "h5_file", "savedmodel_dir",
    "label_smoothed", "synchronized_bn",
)

#: the tool's stated definitions (helpers/diagnose/codes.py), restated here so the premise is measured
#: independently of the implementation under test.
APPLIED_TOLERANCE = 0.10
CHANNEL_QUANTILE = 0.90


class ZooPremiseError(AssertionError):
    """A case is not what it claims (e.g. recomputing the statistics of the 'stale' model does not help)."""


@dataclass
class Case:
    name: str
    model_path: str
    data_path: str
    expect: tuple[str, ...] = ()          # codes that must appear
    expect_any: tuple[str, ...] = ()      # at least one of these must appear (a borderline case)
    forbid: tuple[str, ...] = ()          # codes that must not appear
    worst_layer: str | None = None        # bn_statistics.worst_layer must be this layer
    cli_args: tuple[str, ...] = ()        # extra CLI arguments the run needs (--import, --unsafe, --batch-size)
    notes: str = ""
    kwargs: dict = field(default_factory=dict)      # diagnose() keywords the run needs (imports, unsafe, batch_size)
    runs: bool = True                     # False: diagnose must raise DiagnoseError whatever the keywords
    error_without_kwargs: str | None = None   # without kwargs, DiagnoseError naming this (e.g. "--unsafe")
    error_mentions: tuple[str, ...] = ()  # ... the error message names these too
    off_layers: tuple[str, ...] | None = None       # bn_statistics.off_layers, exactly (as a set)
    off_layers_include: tuple[str, ...] = ()        # ... or at least these
    fix: bool | None = None               # True: diag.fix writes a file that scores better; False: None, nothing
    task: str = "classification"          # classification | regression | timestep (how the fixed file is scored)
    premise: dict = field(default_factory=dict)     # the measured numbers behind the case

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        d = dict(d)
        for key in ("expect", "expect_any", "forbid", "cli_args", "error_mentions", "off_layers_include"):
            d[key] = tuple(d.get(key) or ())
        if d.get("off_layers") is not None:
            d["off_layers"] = tuple(d["off_layers"])
        return cls(**d)


# ---------------------------------------------------------------- shared pieces


def _keras():
    quiet_tensorflow()
    import keras
    return keras


def _seed(seed: int) -> None:
    _keras().utils.set_random_seed(seed)


@functools.lru_cache(maxsize=1)
def _digits():
    from helpers.data import load_digits
    return load_digits()


def _save_npz(path: Path, x_train, y_train, x_test, y_test, **extra) -> str:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return str(path)


def _predict(model, x, batch_size: int = 512) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def accuracy(model, x, y) -> float:
    """Inference-mode accuracy; y: int classes (N,) or (soft) one-hot (N, C)."""
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == 2 else y
    return float(np.mean(_predict(model, x).argmax(-1) == labels))


def mse(model, x, y) -> float:
    return float(np.mean((_predict(model, x).reshape(len(x), -1) - np.asarray(y).reshape(len(x), -1)) ** 2))


def recomputed(model, x_train, score):
    """score(model) with every BN layer's statistics replaced by the exact ones of x_train (precise BN,
    layer by layer), the model left as it was."""
    from helpers.batchnorm import precise_bn, preserved_bn_state
    with preserved_bn_state(model):
        precise_bn(model, x_train)
        return score(model)


def applied_errors(model, x_train, *, compiled: bool = False) -> dict[str, float]:
    """Per BN layer, the tool's stated measure (codes.py): the 90th percentile over channels of
    max(|sqrt(var_exact+eps)/sqrt(var_stored+eps) - 1|, |mean_stored - mean_exact| / sqrt(var_exact+eps)),
    exact = precise BN's statistics (earlier layers corrected first)."""
    from helpers.batchnorm import bn_layers, precise_statistics
    out = {}
    for layer, (mean_e, var_e) in zip(bn_layers(model), precise_statistics(model, x_train, compiled=compiled)):
        mean_s, var_s = np.asarray(layer.moving_mean, np.float64), np.asarray(layer.moving_variance, np.float64)
        eps = float(layer.epsilon)
        scale = np.sqrt(var_e + eps) / np.sqrt(var_s + eps) - 1.0
        shift = (mean_s - mean_e) / np.sqrt(var_e + eps)
        out[layer.name] = float(np.quantile(np.maximum(np.abs(scale), np.abs(shift)), CHANNEL_QUANTILE))
    return out


def first_bn_log_divisor(model, x) -> float:
    """The median over channels of |log(sqrt(var_x+eps) / sqrt(var_stored+eps))| at the first BN layer, var_x
    the variance of its input for x as given (the input-scale measure the tool states in codes.py)."""
    from helpers.batchnorm import bn_layers, population_statistics, preserved_bn_state
    layer = bn_layers(model)[0]
    with preserved_bn_state(model):
        (_, var_x), *_ = population_statistics(model, np.asarray(x, np.float32))
    var_s = np.asarray(layer.moving_variance, np.float64)
    return float(np.median(np.abs(0.5 * np.log((var_x + layer.epsilon) / (var_s + layer.epsilon)))))


def correct(model, x, y) -> np.ndarray:
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == 2 else y
    return _predict(model, x).argmax(-1) == labels


def paired_gain(model, x_train, x_test, y_test) -> dict:
    """Accuracy with stored and with recomputed statistics, the paired gain and its standard error."""
    stored = correct(model, x_test, y_test)
    new = recomputed(model, x_train, lambda m: correct(m, x_test, y_test))
    diff = new.astype(float) - stored.astype(float)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"stored": float(stored.mean()), "recomputed": float(new.mean()), "gain": float(diff.mean()),
            "gain_se": se, "gain_in_se": float(diff.mean() / se) if se > 0 else 0.0}


def _premise(ok: bool, case: str, what: str, numbers: dict) -> None:
    if not ok:
        raise ZooPremiseError(f"{case}: {what}; measured {numbers}")


def _round(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else _round(v) if isinstance(v, dict) else v)
            for k, v in d.items()}


def _fit(model, x, y, *, epochs=1, batch_size=32, lr=3e-3, loss="sparse_categorical_crossentropy",
         steps: int | None = None, sample_weight=None, seed=0, optimizer=None):
    """Compile (Adam unless given) and fit; steps: only the first steps*batch_size examples, one epoch."""
    keras = _keras()
    _seed(seed)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(lr), loss=loss)
    if steps is not None:
        idx = np.random.default_rng(seed).permutation(len(x))[:steps * batch_size]
        x, y = x[idx], y[idx]
        sample_weight = None if sample_weight is None else sample_weight[idx]
        epochs = 1
    model.fit(x, y, epochs=epochs, batch_size=batch_size, sample_weight=sample_weight, verbose=0)
    return model


def digits_cnn(*, momentum: float = 0.9, name: str = "digits_cnn", **bn_kwargs):
    """Four Conv-BN-ReLU (pool after the second) and Dense-BN-ReLU, softmax over 10: BN layers
    bn_a, bn_b, bn_c (the middle one), bn_d, bn_dense."""
    keras = _keras()
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    h = inp
    for tag, filters in zip("abcd", (16, 16, 32, 32)):
        h = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{tag}")(h)
        h = L.BatchNormalization(momentum=momentum, name=f"bn_{tag}", **bn_kwargs)(h)
        h = L.ReLU(name=f"relu_{tag}")(h)
        if tag == "b":
            h = L.MaxPooling2D(2, name="pool")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(64, use_bias=False, name="dense")(h)
    h = L.BatchNormalization(momentum=momentum, name="bn_dense", **bn_kwargs)(h)
    h = L.ReLU(name="relu_dense")(h)
    out = L.Dense(10, activation="softmax", name="classifier")(h)
    return keras.Model(inp, out, name=name)


@functools.lru_cache(maxsize=1)
def _healthy_digits_weights():
    """A digits_cnn trained to convergence (momentum 0.9), then precise BN on x_train: its weights."""
    from helpers.batchnorm import precise_bn
    d = _digits()
    _seed(0)
    model = _fit(digits_cnn(), d.x_train, d.y_train, epochs=4, batch_size=32, lr=3e-3)
    precise_bn(model, d.x_train)
    return [np.array(w) for w in model.get_weights()]


def healthy_digits_cnn():
    """A fresh copy of the shared healthy digits CNN, compiled (Adam, sparse CE, accuracy)."""
    keras = _keras()
    model = digits_cnn()
    model.set_weights(_healthy_digits_weights())
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _stale_numbers(model, x_train, x_test, y_test, score=accuracy) -> dict:
    if score is accuracy:
        return paired_gain(model, x_train, x_test, y_test)
    return {"stored": score(model, x_test, y_test),
            "recomputed": recomputed(model, x_train, lambda m: score(m, x_test, y_test))}


def _require_stale(case, numbers, *, lower_is_better=False, margin=0.10):
    gain = (numbers["stored"] - numbers["recomputed"]) if lower_is_better else \
        (numbers["recomputed"] - numbers["stored"])
    if lower_is_better:
        ok = numbers["recomputed"] < (1 - margin) * numbers["stored"]
    else:
        ok = gain > margin
    _premise(ok, case, "recomputing the statistics must improve the held-out metric clearly", numbers)


STALE_FORBID = ("bn_current", "bn_mismatch_no_gain", "model_untrained", "input_scale", "bn_frozen")


# ---------------------------------------------------------------- the cases


def build_mobilenet_healthy(out: Path) -> Case:
    """MobileNetV2 (alpha 0.35, 32x32x3, weights=None) on coloured blobs, trained briefly, then precise
    BN: statistics exact, yet many channels (depthwise outputs, ReLU6 feeding 1x1 projections) are
    near-dead (variance ~0), where a relative error in the variance means nothing."""
    import tensorflow as tf
    keras = _keras()
    from helpers.batchnorm import bn_layers, population_statistics, precise_bn
    rng = np.random.default_rng(1)
    n = 480
    colours = np.array([[1, .15, .15], [.15, 1, .15], [.15, .15, 1], [1, 1, .15]], np.float32)
    y = rng.integers(0, 4, n).astype(np.int32)
    yy, xx = np.mgrid[0:32, 0:32]
    cy, cx = rng.uniform(8, 24, n), rng.uniform(8, 24, n)
    r = rng.uniform(3, 7, n)
    blob = np.exp(-(((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
                    / (2 * r[:, None, None] ** 2)))
    stripes = (np.sin(xx[None] * rng.uniform(0.3, 1.2, n)[:, None, None]) > 0) * 0.15
    x = (blob[..., None] * colours[y][:, None, None, :] + stripes[..., None]
         + rng.normal(0, 0.05, (n, 32, 32, 3))).clip(0, 1).astype(np.float32)
    x_train, y_train, x_test, y_test = x[:320], y[:320], x[320:], y[320:]

    _seed(1)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=4)
    opt = keras.optimizers.SGD(0.1)                 # momentum would add ~5 s to the first trace
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(xb, yb):                                # a plain loop: fit's first trace costs ~15 s here
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for epoch in range(6):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order) - 31, 32):
            step(x_train[order[i:i + 32]], y_train[order[i:i + 32]])
    acc_training_stats = accuracy(model, x_test, y_test)
    precise_bn(model, x_train, compiled=True)          # one traced function: 52 eager passes take ~25 s
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    acc = accuracy(model, x_test, y_test)
    # after precise BN every earlier layer is exact, so one pass (no reassignment) gives the fixed point
    errors = {}
    for layer, (mean_e, var_e) in zip(bn_layers(model), population_statistics(model, x_train, compiled=True)):
        eps = float(layer.epsilon)
        scale = np.sqrt(var_e + eps) / np.sqrt(np.asarray(layer.moving_variance, np.float64) + eps) - 1.0
        shift = (np.asarray(layer.moving_mean, np.float64) - mean_e) / np.sqrt(var_e + eps)
        errors[layer.name] = float(np.quantile(np.maximum(np.abs(scale), np.abs(shift)), CHANNEL_QUANTILE))
    var = np.concatenate([np.asarray(l.moving_variance) for l in bn_layers(model)])
    premise = {"test_acc_moving_stats_after_training": acc_training_stats, "test_acc_precise": acc,
               "chance": 0.25, "bn_layers": len(errors), "max_applied_error": max(errors.values()),
               "channels": int(var.size), "channels_var_below_1e-3": int((var < 1e-3).sum()),
               "channels_var_below_1e-5": int((var < 1e-5).sum())}
    _premise(acc > 0.5 and max(errors.values()) < 1e-3, "mobilenet_healthy",
             "the model must be above chance with exact statistics", premise)
    path = out / "mobilenet_healthy.keras"
    model.save(path)
    return Case("mobilenet_healthy", str(path), _save_npz(out / "mobilenet_healthy.npz", x_train, y_train,
                                                          x_test, y_test),
                expect=("bn_current",),
                forbid=("bn_stale", "bn_mismatch_no_gain", "model_untrained", "input_scale", "bn_small_batch_bias",
                        "batch1_mismatch"),
                off_layers=(), fix=False,
                notes="healthy: statistics recomputed exactly; many near-dead channels", premise=premise)


def build_nested_resnet_stale(out: Path) -> Case:
    """A small ResNet whose BN layers sit in nested sub-models (a stage model holding two block models),
    momentum 0.99, trained 40 steps: the stored statistics are still ~2/3 their initial values."""
    keras = _keras()
    L = keras.layers

    def block(channels, tag):
        inp = keras.Input((8, 8, channels))
        h = L.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{tag}_conv1")(inp)
        h = L.BatchNormalization(momentum=0.99, name=f"{tag}_bn1")(h)
        h = L.ReLU()(h)
        h = L.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{tag}_conv2")(h)
        h = L.BatchNormalization(momentum=0.99, name=f"{tag}_bn2")(h)
        return keras.Model(inp, L.ReLU()(L.Add()([inp, h])), name=tag)

    _seed(2)
    stage_in = keras.Input((8, 8, 16))
    stage = keras.Model(stage_in, block(16, "block2")(block(16, "block1")(stage_in)), name="stage1")
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    h = L.BatchNormalization(momentum=0.99, name="stem_bn")(h)
    h = L.ReLU()(h)
    h = stage(h)
    h = L.GlobalAveragePooling2D()(h)
    out_ = L.Dense(10, activation="softmax", name="classifier")(h)
    model = keras.Model(inp, out_, name="nested_resnet")
    d = _digits()
    _fit(model, d.x_train, d.y_train, steps=40, batch_size=32, lr=1e-2, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    premise = _stale_numbers(model, d.x_train, d.x_test, d.y_test)
    premise["applied_errors"] = applied_errors(model, d.x_train)
    _require_stale("nested_resnet_stale", premise)
    path = out / "nested_resnet_stale.keras"
    model.save(path)
    return Case("nested_resnet_stale", str(path), _save_npz(out / "digits.npz", d.x_train, d.y_train,
                                                            d.x_test, d.y_test),
                expect=("bn_stale",), forbid=STALE_FORBID, fix=True,
                notes="BN inside nested keras.Model layers (stage1 > block1/block2), 40 steps at momentum 0.99",
                premise=premise)


def _perturbed_case(out: Path, name: str, perturb, *, expect, forbid, worst, off, notes) -> Case:
    d = _digits()
    model = healthy_digits_cnn()
    from helpers.batchnorm import moving_statistics
    before = moving_statistics(model)
    acc_healthy = accuracy(model, d.x_test, d.y_test)
    perturb(model)
    after = moving_statistics(model)
    names = [n for n in ("bn_a", "bn_b", "bn_c", "bn_d", "bn_dense")]
    changed = [n for n, (m0, v0), (m1, v1) in zip(names, before, after)
               if not (np.array_equal(m0, m1) and np.array_equal(v0, v1))]
    errors = applied_errors(model, d.x_train)
    gain = paired_gain(model, d.x_train, d.x_test, d.y_test)
    premise = {"test_acc_healthy": acc_healthy, "test_acc_perturbed": gain["stored"],
               "test_acc_recomputed": gain["recomputed"], "gain_se": gain["gain_se"],
               "gain_in_se": gain["gain_in_se"], "changed_layers": changed, "applied_errors": errors}
    ok = (sorted(changed) == sorted(off) and all(errors[n] > APPLIED_TOLERANCE for n in off)
          and all(errors[n] < 1e-3 for n in names if n not in off))
    if worst is not None:
        ok = ok and max(errors, key=errors.get) == worst
    _premise(ok, name, f"only {off} must be changed and off", premise)
    path = out / f"{name}.keras"
    model.save(path)
    return Case(name, str(path), _save_npz(out / "digits.npz", d.x_train, d.y_train, d.x_test, d.y_test),
                expect=expect, forbid=forbid, worst_layer=worst, off_layers=off, notes=notes, premise=premise)


def _by_gain(case: Case) -> Case:
    """Which verdict the measured gain calls for: bn_stale (and a fix) when the paired gain exceeds 3 standard
    errors, bn_mismatch_no_gain (and no fix) below 1; between them either is right (the tool's line is 2)."""
    z = case.premise["gain_in_se"]
    if z > 3:
        case.expect, case.fix = case.expect + ("bn_stale",), True
        case.forbid = case.forbid + ("bn_mismatch_no_gain",)
    elif z < 1:
        case.expect, case.fix = case.expect + ("bn_mismatch_no_gain",), False
        case.forbid = case.forbid + ("bn_stale",)
    else:
        case.expect_any = ("bn_stale", "bn_mismatch_no_gain")
    return case


def _variance_times(factor: float):
    def perturb(model):
        layer = model.get_layer("bn_c")
        layer.moving_variance.assign(np.asarray(layer.moving_variance) * factor)
    return perturb


def build_one_layer_variance_x1_5(out: Path) -> Case:
    return _by_gain(_perturbed_case(
        out, "one_layer_variance_x1_5", _variance_times(1.5), expect=(),
        forbid=("bn_current", "model_untrained", "input_scale", "bn_small_batch_bias", "bn_frozen"),
        worst="bn_c", off=("bn_c",),
        notes="healthy digits CNN, bn_c moving_variance x1.5 (divisor x1.22): only bn_c is off"))


def build_one_layer_variance_x4(out: Path) -> Case:
    case = _perturbed_case(
        out, "one_layer_variance_x4", _variance_times(4.0), expect=(),
        forbid=("bn_current", "model_untrained", "input_scale", "bn_small_batch_bias", "bn_frozen"),
        worst="bn_c", off=("bn_c",),
        notes="healthy digits CNN, bn_c moving_variance x4 (divisor x2): only bn_c is off")
    p = case.premise
    _premise(p["test_acc_recomputed"] - p["test_acc_perturbed"] > 0.02, case.name,
             "x4 must cost accuracy that recomputing restores", p)
    return _by_gain(case)


def build_mean_shift_three_layers(out: Path) -> Case:
    shifted = ("bn_a", "bn_c", "bn_dense")

    def perturb(model):
        for n in shifted:
            layer = model.get_layer(n)
            layer.moving_mean.assign(np.asarray(layer.moving_mean) + np.sqrt(np.asarray(layer.moving_variance)))
    case = _perturbed_case(out, "mean_shift_three_layers", perturb, expect=("bn_stale",),
                           forbid=("bn_current", "model_untrained", "input_scale", "bn_small_batch_bias",
                                   "bn_mismatch_no_gain"),
                           worst=None, off=shifted,
                           notes="healthy digits CNN, moving_mean += sqrt(moving_variance) in bn_a, bn_c, bn_dense")
    p = case.premise
    _premise(p["test_acc_recomputed"] - p["test_acc_perturbed"] > 0.05, case.name,
             "the shifts must cost accuracy that recomputing restores", p)
    case.fix = True
    return case


def _small_batch_case(out: Path, name: str, momentum: float, *, anneal: bool, notes: str) -> Case:
    """Dense-BN-ReLU-Dropout-Dense trained at batch 4 (3 epochs at lr 1e-3, then with anneal one at 1e-4):
    Keras's moving variance averages the biased per-batch variance of 4 values, so it sits near 3/4 of the
    exact variance, however long the training."""
    keras = _keras()
    L = keras.layers
    from helpers.batchnorm import bn_layers, precise_statistics
    d = _digits()
    xf_train, xf_test = d.flat()
    _seed(3)
    inp = keras.Input((64,))
    h = L.Dense(32, use_bias=False, name="dense")(inp)
    h = L.BatchNormalization(momentum=momentum, name="bn")(h)
    h = L.ReLU()(h)
    h = L.Dropout(0.2)(h)
    model = keras.Model(inp, L.Dense(10, activation="softmax", name="classifier")(h), name="small_batch_mlp")
    _fit(model, xf_train, d.y_train, epochs=3, batch_size=4, lr=1e-3, seed=3)
    if anneal:
        _fit(model, xf_train, d.y_train, epochs=1, batch_size=4, lr=1e-4, seed=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    (mean_e, var_e), = precise_statistics(model, xf_train)
    layer = bn_layers(model)[0]
    ratio = np.asarray(layer.moving_variance, np.float64) / var_e
    shift = np.abs(np.asarray(layer.moving_mean, np.float64) - mean_e) / np.sqrt(var_e + layer.epsilon)
    premise = _stale_numbers(model, xf_train, xf_test, d.y_test)
    premise.update({"median_var_ratio_stored_over_exact": float(np.median(ratio)), "expected_ratio_(m-1)/m": 0.75,
                    "ratio_q10": float(np.quantile(ratio, 0.1)), "ratio_q90": float(np.quantile(ratio, 0.9)),
                    "mean_shift_q90": float(np.quantile(shift, 0.9))})
    _premise(abs(np.median(ratio) - 0.75) < 0.04 and premise["stored"] > 0.85, name,
             "the stored variance must sit near 3/4 of the exact one, the model trained", premise)
    path = out / f"{name}.keras"
    model.save(path)
    return Case(name, str(path), _save_npz(out / "digits_flat.npz", xf_train, d.y_train, xf_test, d.y_test),
                expect=("bn_small_batch_bias",),
                forbid=("model_untrained", "input_scale", "bn_frozen", "bn_stale", "bn_current"),
                kwargs={"batch_size": 4}, cli_args=("--batch-size", "4"), notes=notes, premise=premise)


def build_small_batch_dense_bn(out: Path) -> Case:
    return _small_batch_case(out, "small_batch_dense_bn", 0.99, anneal=True,
                             notes="batch 4, momentum 0.99, converged (last epoch at lr 1e-4): var ~ 3/4 exact, "
                                   "means right")


def build_small_batch_dense_bn_momentum_0_9(out: Path) -> Case:
    return _small_batch_case(out, "small_batch_dense_bn_momentum_0_9", 0.9, anneal=True,
                             notes="batch 4, momentum 0.9 (the EMA averages ~19 batches of 4): median var ratio "
                                   "~3/4, but each channel's stored mean and variance are noisy")


def build_frozen_bn_transfer(out: Path) -> Case:
    """Transfer learning: the healthy digits CNN's BN layers frozen (trainable=False, inference mode in fit),
    its convolutions fine-tuned with a new head on inverted, rotated digits. The head and convolutions learnt
    on the features the kept statistics give: recomputing them on the new data hurts."""
    keras = _keras()
    from helpers.batchnorm import bn_layers
    d = _digits()

    def shift(x):
        return (1.0 - np.rot90(x, 1, axes=(1, 2))).astype(np.float32)

    x_train, x_test = shift(d.x_train), shift(d.x_test)
    base = healthy_digits_cnn()
    for layer in bn_layers(base):
        layer.trainable = False
    features = base.get_layer("relu_dense").output
    _seed(4)
    head = keras.layers.Dense(10, activation="softmax", name="new_head")(features)
    model = keras.Model(base.input, head, name="transfer")
    acc_before_fit = accuracy(model, x_test, d.y_test)
    _fit(model, x_train, d.y_train, epochs=3, batch_size=32, lr=1e-3, seed=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    premise = _stale_numbers(model, x_train, x_test, d.y_test)
    premise["test_acc_new_head_before_fit"] = acc_before_fit
    premise["frozen_bn_layers"] = [l.name for l in bn_layers(model) if not l.trainable]
    premise["applied_errors"] = applied_errors(model, x_train)
    premise["first_bn_log_divisor"] = first_bn_log_divisor(model, x_train)
    _premise(premise["stored"] - premise["recomputed"] > 0.05 and premise["stored"] > 0.8, "frozen_bn_transfer",
             "recomputing the frozen statistics must hurt", premise)
    path = out / "frozen_bn_transfer.keras"
    model.save(path)
    return Case("frozen_bn_transfer", str(path), _save_npz(out / "frozen_bn_transfer.npz", x_train, d.y_train,
                                                           x_test, d.y_test),
                expect=("bn_frozen",), forbid=("bn_stale", "model_untrained", "input_scale"), fix=False,
                notes="BN frozen, convs + new head fine-tuned on 1 - rot90(x): recomputing hurts",
                premise=premise)


def build_uint8_scale(out: Path) -> Case:
    """The healthy digits CNN (trained on x in [0, 1]) given uint8 data x*255. Recomputing the statistics
    on the uint8 data would 'restore' the accuracy (conv without bias, then BN: scale-invariant), but the
    cause is the input: the advice must be to rescale x, not to recalibrate the model."""
    d = _digits()
    model = healthy_digits_cnn()
    x_train, x_test = (np.round(d.x_train * 255).astype(np.uint8), np.round(d.x_test * 255).astype(np.uint8))
    premise = {"test_acc_x01": accuracy(model, d.x_test, d.y_test),
               "test_acc_uint8": accuracy(model, x_test.astype(np.float32), d.y_test),
               "test_acc_uint8_recomputed_on_uint8": recomputed(
                   model, x_train.astype(np.float32), lambda m: accuracy(m, x_test.astype(np.float32), d.y_test)),
               "first_bn_log_divisor_uint8": first_bn_log_divisor(model, x_train),
               "first_bn_log_divisor_x01": first_bn_log_divisor(model, d.x_train)}
    _premise(premise["test_acc_x01"] - premise["test_acc_uint8"] > 0.3, "uint8_scale",
             "x*255 must break the model", premise)
    path = out / "uint8_scale.keras"
    model.save(path)
    return Case("uint8_scale", str(path), _save_npz(out / "uint8_scale.npz", x_train, d.y_train, x_test, d.y_test),
                expect=("input_scale",), forbid=("bn_stale", "model_untrained", "bn_small_batch_bias"), fix=False,
                notes="healthy model, data uint8 x*255", premise=premise)


def build_untrained_uncompiled(out: Path) -> Case:
    d = _digits()
    _seed(5)
    model = digits_cnn(momentum=0.99, name="untrained")
    premise = _stale_numbers(model, d.x_train, d.x_test, d.y_test)
    premise["chance"] = 0.1
    _premise(max(premise["stored"], premise["recomputed"]) < 0.2, "untrained_uncompiled",
             "a fresh model must be near chance", premise)
    path = out / "untrained_uncompiled.keras"
    model.save(path)
    return Case("untrained_uncompiled", str(path), _save_npz(out / "digits.npz", d.x_train, d.y_train,
                                                             d.x_test, d.y_test),
                expect=("model_untrained",), forbid=("bn_stale", "input_scale"), fix=False,
                notes="fresh digits CNN, never compiled or trained", premise=premise)


@functools.lru_cache(maxsize=1)
def _tagger(out: Path):
    """A per-timestep Conv1D-BN tagger on make_series data, trained with per-step weights neg/pos."""
    keras = _keras()
    L = keras.layers
    from helpers.batchnorm import precise_bn
    from helpers.imbalanced import make_series, positive_weight_for, timestep_weights, train_test_split
    from helpers.detection_metrics import pr_auc
    data = make_series(480, 64, frac_series_with_anomaly=0.3, seed=6)
    train, test = train_test_split(data, 0.25, seed=6)
    w_pos = positive_weight_for(train.y)
    sw = timestep_weights(train.y, w_pos)
    _seed(6)
    inp = keras.Input((64, 1))
    h = inp
    for i, k in enumerate((5, 5)):
        h = L.Conv1D(16, k, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = L.BatchNormalization(momentum=0.9, name=f"bn{i}")(h)
        h = L.ReLU()(h)
    model = keras.Model(inp, L.Conv1D(1, 1, activation="sigmoid", name="tag")(h), name="tagger")
    _fit(model, train.x, train.y[..., None], epochs=8, batch_size=32, lr=3e-3, loss="binary_crossentropy",
         sample_weight=sw, seed=6)
    precise_bn(model, train.x)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    path = out / "tagger.keras"
    model.save(path)
    premise = {"test_pr_auc": pr_auc(test.y, _predict(model, test.x)[..., 0]),
               "positive_step_fraction": float(test.y.mean()), "neg_per_pos_train": w_pos}
    _premise(premise["test_pr_auc"] > 3 * premise["positive_step_fraction"], "tagger",
             "the tagger must be well above the prevalence", premise)
    return str(path), train, test, w_pos, sw, premise


def build_tagger_weights_ok(out: Path) -> Case:
    path, train, test, w_pos, sw, premise = _tagger(out)
    premise = dict(premise, positive_weight_share=float(sw[train.y > 0.5].sum() / sw.sum()))
    return Case("tagger_weights_ok", path, _save_npz(out / "tagger_weights_ok.npz", train.x, train.y[..., None],
                                                     test.x, test.y[..., None], sample_weight_train=sw),
                expect=("timestep_weights_ok",),
                forbid=("timestep_class_weight_trap", "timestep_weights_unbalanced", "timestep_no_weights",
                        "model_untrained", "bn_stale"),
                notes="Conv1D tagger, y (N, T, 1), sample_weight_train (N, T) = neg/pos on positive steps",
                premise=premise)


def build_tagger_series_weights(out: Path) -> Case:
    path, train, test, w_pos, sw, premise = _tagger(out)
    per_series = np.where(train.y.max(axis=1) > 0.5, np.float32(w_pos), np.float32(1.0)).astype(np.float32)
    share = float((per_series[:, None] * train.y).sum() / (per_series.sum() * train.y.shape[1]))
    premise = dict(premise, positive_weight_share_with_series_weights=share)
    return Case("tagger_series_weights", path, _save_npz(out / "tagger_series_weights.npz", train.x, train.y,
                                                         test.x, test.y, sample_weight_train=per_series),
                expect=("timestep_class_weight_trap",),
                forbid=("timestep_weights_ok", "timestep_no_weights", "model_untrained", "bn_stale"),
                notes="same tagger, y (N, T), sample_weight_train (N,) = neg/pos for series with an anomaly",
                premise=premise)


ZOO_LAYERS = '''"""Custom layers of the diagnose zoo (written next to the model by tests/diagnose_zoo.py)."""
import keras


@keras.saving.register_keras_serializable(package="zoo")
class ScaledResidual(keras.layers.Layer):
    """x + alpha * scale * x, with a learnt per-channel scale."""

    def __init__(self, alpha=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x + self.alpha * self.scale * x

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
'''


def _healthy_flat_digits_model(model, d, out: Path, name: str, data_tag: str, *, seed: int):
    """Train a model on the flattened digits (4 epochs, batch 32, Adam 3e-3), recompute its BN statistics
    exactly, compile it again and save it with its data: (model path, data path, premise)."""
    keras = _keras()
    from helpers.batchnorm import precise_bn
    xf_train, xf_test = d.flat()
    _fit(model, xf_train, d.y_train, epochs=4, batch_size=32, lr=3e-3, seed=seed)
    precise_bn(model, xf_train)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    path = out / f"{name}.keras"
    model.save(path)
    data = _save_npz(out / f"digits_flat_{data_tag}.npz", xf_train, d.y_train, xf_test, d.y_test)
    return str(path), data, {"test_acc": accuracy(model, xf_test, d.y_test)}


def build_custom_layer(out: Path) -> Case:
    keras = _keras()
    L = keras.layers
    module_path = out / "zoo_layers.py"
    module_path.write_text(ZOO_LAYERS)
    spec = importlib.util.spec_from_file_location("zoo_layers", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    d = _digits()
    _seed(7)
    inp = keras.Input((64,))
    h = L.Dense(32, use_bias=False, name="dense")(inp)
    h = L.BatchNormalization(momentum=0.9, name="bn")(h)
    h = L.ReLU()(h)
    h = module.ScaledResidual(0.5, name="scaled_residual")(h)
    model = keras.Model(inp, L.Dense(10, activation="softmax", name="classifier")(h), name="custom")
    path, data, premise = _healthy_flat_digits_model(model, d, out, "custom_layer", "custom", seed=7)
    return Case("custom_layer", path, data,
                expect=(), forbid=("bn_stale", "model_untrained"),
                kwargs={"imports": [str(module_path)]}, cli_args=("--import", str(module_path)),
                error_without_kwargs="--import", error_mentions=("ScaledResidual",),
                notes="a zoo>ScaledResidual layer defined in zoo_layers.py next to the model", premise=premise)


def build_lambda_layer(out: Path) -> Case:
    keras = _keras()
    L = keras.layers
    d = _digits()
    _seed(8)
    inp = keras.Input((64,))
    h = L.Lambda(lambda t: t * 2.0 - 1.0, name="centre")(inp)
    h = L.Dense(32, use_bias=False, name="dense")(h)
    h = L.BatchNormalization(momentum=0.9, name="bn")(h)
    h = L.ReLU()(h)
    model = keras.Model(inp, L.Dense(10, activation="softmax", name="classifier")(h), name="with_lambda")
    path, data, premise = _healthy_flat_digits_model(model, d, out, "lambda_layer", "lambda", seed=8)
    return Case("lambda_layer", path, data,
                expect=(), forbid=("bn_stale", "model_untrained"),
                kwargs={"unsafe": True}, cli_args=("--unsafe",), error_without_kwargs="--unsafe",
                notes="a keras.layers.Lambda (Python bytecode in the file: loading needs safe_mode=False)",
                premise=premise)


@functools.lru_cache(maxsize=1)
def _regression_data():
    rng = np.random.default_rng(9)
    n, dim = 800, 8
    x = (2.0 + 4.0 * rng.normal(size=(n, dim))).astype(np.float32)
    w = rng.normal(size=dim)
    z = (x - 2.0) / 4.0
    y = (np.sin(z @ w / 2) + 0.5 * z[:, 0] * z[:, 1] + 0.05 * rng.normal(size=n)).astype(np.float32)
    return x[:600], y[:600], x[600:], y[600:]


def _regressor(momentum):
    keras = _keras()
    L = keras.layers
    inp = keras.Input((8,))
    h = inp
    for i in range(2):
        h = L.Dense(32, use_bias=False, name=f"dense{i}")(h)
        h = L.BatchNormalization(momentum=momentum, name=f"bn{i}")(h)
        h = L.ReLU()(h)
    return keras.Model(inp, L.Dense(1, name="out")(h), name="regressor")


def build_regressor_mse_stale(out: Path) -> Case:
    keras = _keras()
    x_train, y_train, x_test, y_test = _regression_data()
    _seed(10)
    model = _fit(_regressor(0.99), x_train, y_train, steps=18, batch_size=32, lr=1e-2, loss="mse", seed=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    premise = _stale_numbers(model, x_train, x_test, y_test, score=mse)
    premise["var_y_test"] = float(np.var(y_test))
    _require_stale("regressor_mse_stale", premise, lower_is_better=True, margin=0.3)
    path = out / "regressor_mse_stale.keras"
    model.save(path)
    return Case("regressor_mse_stale", str(path), _save_npz(out / "regression.npz", x_train, y_train, x_test, y_test),
                expect=("bn_stale",), forbid=STALE_FORBID, fix=True, task="regression",
                notes="Dense-BN regressor, MSE, continuous y (N,), 18 steps at momentum 0.99 (MSE: lower is better)",
                premise=premise)


def build_regressor_mse_healthy(out: Path) -> Case:
    keras = _keras()
    from helpers.batchnorm import precise_bn
    x_train, y_train, x_test, y_test = _regression_data()
    _seed(11)
    model = _fit(_regressor(0.9), x_train, y_train, epochs=15, batch_size=32, lr=3e-3, loss="mse", seed=11)
    precise_bn(model, x_train)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", metrics=["mae"])
    premise = {"test_mse": mse(model, x_test, y_test), "var_y_test": float(np.var(y_test))}
    _premise(premise["test_mse"] < 0.5 * premise["var_y_test"], "regressor_mse_healthy",
             "the regressor must beat predicting the mean", premise)
    path = out / "regressor_mse_healthy.keras"
    model.save(path)
    return Case("regressor_mse_healthy", str(path), _save_npz(out / "regression.npz", x_train, y_train,
                                                              x_test, y_test),
                expect=("bn_current",), forbid=("bn_stale", "model_untrained", "input_scale"), fix=False,
                task="regression", notes="Dense-BN regressor trained to convergence, precise BN", premise=premise)


def build_h5_file(out: Path) -> Case:
    d = _digits()
    model = healthy_digits_cnn()
    path = out / "h5_file.h5"
    model.save(path)
    premise = {"test_acc": accuracy(model, d.x_test, d.y_test)}
    return Case("h5_file", str(path), _save_npz(out / "digits.npz", d.x_train, d.y_train, d.x_test, d.y_test),
                expect=("bn_current",), forbid=("bn_stale", "model_untrained", "input_scale"), fix=False,
                notes="the healthy digits CNN saved as legacy .h5", premise=premise)


def build_savedmodel_dir(out: Path) -> Case:
    keras = _keras()
    d = _digits()
    xf_train, xf_test = d.flat()
    _seed(12)
    inp = keras.Input((64,))
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(16, use_bias=False)(inp))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    path = out / "savedmodel_dir"
    model.export(str(path), verbose=False)
    return Case("savedmodel_dir", str(path), _save_npz(out / "digits_flat_sm.npz", xf_train, d.y_train,
                                                       xf_test, d.y_test),
                runs=False, error_without_kwargs=".keras",
                notes="a TensorFlow SavedModel folder (model.export): Keras 3 cannot load it; save as .keras")


def _stale_digits_cnn(name, seed, **bn_kwargs):
    keras = _keras()
    _seed(seed)
    model = digits_cnn(momentum=0.99, name=name, **bn_kwargs)
    return model, keras


def build_label_smoothed(out: Path) -> Case:
    d = _digits()
    eye = np.eye(10, dtype=np.float32)
    y_train = eye[d.y_train] * 0.9 + 0.01
    y_test = eye[d.y_test] * 0.9 + 0.01
    model, keras = _stale_digits_cnn("label_smoothed", 13)
    _fit(model, d.x_train, y_train, steps=40, batch_size=32, lr=3e-3, loss="categorical_crossentropy", seed=13)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    premise = _stale_numbers(model, d.x_train, d.x_test, y_test)
    _require_stale("label_smoothed", premise)
    path = out / "label_smoothed.keras"
    model.save(path)
    return Case("label_smoothed", str(path), _save_npz(out / "label_smoothed.npz", d.x_train, y_train,
                                                       d.x_test, y_test),
                expect=("bn_stale",), forbid=STALE_FORBID, fix=True,
                notes="soft targets (N, 10): one-hot smoothed with 0.1; 40 steps at momentum 0.99",
                premise=premise)


def build_synchronized_bn(out: Path) -> Case:
    d = _digits()
    model, keras = _stale_digits_cnn("synchronized", 14, synchronized=True)
    _fit(model, d.x_train, d.y_train, steps=40, batch_size=32, lr=3e-3, seed=14)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    premise = _stale_numbers(model, d.x_train, d.x_test, d.y_test)
    _require_stale("synchronized_bn", premise)
    path = out / "synchronized_bn.keras"
    model.save(path)
    return Case("synchronized_bn", str(path), _save_npz(out / "digits.npz", d.x_train, d.y_train,
                                                        d.x_test, d.y_test),
                expect=("bn_stale",), forbid=STALE_FORBID, fix=True,
                notes="BatchNormalization(synchronized=True), 40 steps at momentum 0.99", premise=premise)


BUILDERS = {name: globals()[f"build_{name}"] for name in CASE_NAMES}


def build_zoo(out, names=None) -> list[Case]:
    """Build the named cases (all by default) into `out`; writes out/manifest.json (cases, seconds)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_tensorflow()
    cases, seconds = [], {}
    for name in names or CASE_NAMES:
        start = time.perf_counter()
        cases.append(BUILDERS[name](out))
        seconds[name] = round(time.perf_counter() - start, 2)
    manifest = {"cases": [asdict(c) | {"premise": _round(c.premise)} for c in cases], "seconds": seconds}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    return cases


def load_zoo(out) -> dict[str, Case]:
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return {d["name"]: Case.from_json(d) for d in manifest["cases"]}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python tests/diagnose_zoo.py OUT_DIR [CASE ...]")
    start = time.perf_counter()
    built = build_zoo(sys.argv[1], sys.argv[2:] or None)
    print(f"built {len(built)} cases in {time.perf_counter() - start:.1f} s into {sys.argv[1]}")
