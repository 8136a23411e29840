"""Diagnose your own model: the workbook's measurements pointed at a user's Keras model and data.

    python -m helpers.diagnose MODEL DATA [--out DIR] [--batch-size B] [--only bn,batch1,gap,noise,timestep]
    workbook-diagnose MODEL DATA ...              (the same, installed as a console script)

MODEL is a Keras 3 `.keras` file; DATA an `.npz` with x_train, y_train, x_test, y_test and
optionally sample_weight_train. Labels are integer classes (N,), one-hot (N, C) or per-timestep
binary (N, T) / (N, T, 1); the metric is accuracy for classes and PR-AUC for per-timestep labels.
It writes DIR/report.json, DIR/report.md and DIR/report.html (plots inline) and exits 0 when the
diagnosis ran, whatever it found. Bad input exits 2 with one line naming the problem, and nothing
is written. The model file is only read; BN statistics changed in memory are put back.

Every number comes from the function a lesson teaches it with (one implementation each):
helpers.batchnorm (BN layers, exact population statistics, precise BN, the BN-state guard),
helpers.training (scoring in either BN mode), helpers.gradient_noise.two_batch_noise_scale,
helpers.imbalanced (positive weight, per-step weights, PR-AUC, what Keras's class_weight does).
This module holds the plumbing: input checks, the gradient norms it feeds the noise-scale
estimate, the tap that reads BN inputs inside nested models, the report and the CLI.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
_EXAMPLE_FILES = {"EXAMPLES_DIR": "", "DEFAULT_MODEL": "stale_bn.keras", "DEFAULT_DATA": "digits.npz"}


def __getattr__(name: str):
    # EXAMPLES_DIR (data/examples), DEFAULT_MODEL and DEFAULT_DATA (lesson 07's default example) are found
    # when used, where the workbook's data/ is (helpers.workbook.committed.find_data_dir): the command
    # itself needs no data/ folder.
    if name in _EXAMPLE_FILES:
        from .workbook.committed import find_data_dir
        return find_data_dir() / "examples" / _EXAMPLE_FILES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

CHECKS = ("bn", "batch1", "gap", "noise", "timestep")
REPORT_KEYS = ("bn_layers", "bn_statistics", "batch1", "gap", "noise", "timestep", "findings")

# ---- the stated thresholds (each is printed in the report next to the number it judges)
#: stale when some BN layer's stored moving variance is off the exact one by more than this
#: (mean over channels of |stored − exact| / exact). Sampling noise of a warmed-up average is
#: a few percent (lesson 02 §2, lesson 04 §2); a 0.99-momentum run stopped early is off by ×2–×100.
STALE_VARIANCE_ERROR = 0.25
#: ... or when recomputing the statistics changes the test metric by more than this (absolute).
STALE_METRIC_CHANGE = 0.02
#: batch-1 and batched inference "match" when no output differs by more than this (float32 noise).
BATCH1_TOLERANCE = 1e-4
#: a training-mode output at batch 1 is "constant" when it is within this of β (relative to 1 + |β|).
CONSTANT_TOLERANCE = 1e-5
#: the gap decomposition calls a part worth naming when it exceeds this (absolute metric).
GAP_THRESHOLD = 0.05
#: class_weight weights per-timestep labels wrongly when the share of the total weight it gives the
#: positive steps differs from the per-step weighting's share by more than this fraction of it.
CLASS_WEIGHT_TRAP_RATIO = 0.10
#: gradient noise: batches drawn at b_small = the batch size and b_big = BIG_FACTOR × b_small.
BIG_FACTOR = 8
SMALL_BATCHES = 24
BIG_BATCHES = 8

# the lesson section that teaches each check: (notebook, section heading)
LESSONS = {
    "warmup": ("04_batchnorm_running_statistics.ipynb", "1. How the moving averages warm up"),
    "precise": ("04_batchnorm_running_statistics.ipynb", "6. Precise BN: recomputing the statistics exactly"),
    "gap": ("04_batchnorm_running_statistics.ipynb", "3. Decomposing the train/validation gap"),
    "batch1": ("03_batchnorm_train_vs_inference.ipynb", "2. Three ways to call the same model"),
    "streaming": ("03_batchnorm_train_vs_inference.ipynb", "3. The accepted answer, tested"),
    "noise": ("01_steps_epochs_and_batches.ipynb",
              "The gradient noise scale: when does a bigger batch stop helping?"),
    "timestep": ("06_imbalanced_timestep_labels.ipynb", "3. Per-timestep weights done right"),
}


class DiagnoseError(Exception):
    """Bad input: the message is the one line the CLI prints (exit status 2)."""


def lesson_link(key: str) -> str:
    """'notebooks/NN_x.ipynb#Section-heading' (Jupyter's anchor: the heading, spaces as '-')."""
    notebook, heading = LESSONS[key]
    return f"notebooks/{notebook}#{heading.replace(' ', '-')}"


def lesson_ref(key: str) -> str:
    notebook, heading = LESSONS[key]
    return f"lesson {notebook[:2]} §{heading.split('.')[0] if heading[0].isdigit() else heading}"


def _finding(text: str, key: str) -> str:
    notebook, heading = LESSONS[key]
    return f"{text} (lesson {notebook[:2]}, \"{heading}\": {lesson_link(key)})"


# ---------------------------------------------------------------- input


@dataclass(frozen=True)
class ExistingFile:
    """A notebook parameter rule (for helpers.setup): a path to an existing file ending in `suffix`,
    or "" for `default`. check() returns the resolved path as a string."""
    suffix: str
    default: Path

    def allowed(self) -> str:
        return f"a path to an existing {self.suffix} file, or \"\" for the default {self.default.name}"

    def check(self, name: str, value: Any) -> str:
        from .workbook.params import ParameterError
        if not isinstance(value, str):
            raise ParameterError(f"parameter {name!r} = {value!r} ({type(value).__name__}) is not allowed: "
                                 f"expected {self.allowed()}")
        if value.strip() == "":
            return str(self.default)
        path = Path(value).expanduser()
        problem = ("does not exist" if not path.exists() else "is a directory" if path.is_dir()
                   else f"does not end in {self.suffix}" if path.suffix != self.suffix else None)
        if problem:
            raise ParameterError(f"parameter {name!r} = {value!r} {problem}: expected {self.allowed()}")
        return str(path.resolve())


@dataclass
class Inputs:
    """The validated model and data. kind: 'classes' or 'timestep'; y_* as the metric wants
    them (int classes (N,), or 0/1 floats (N, T)); y_loss_* shaped like the model output."""
    model: Any
    model_path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str
    label_form: str
    num_outputs: int
    y_loss_train: np.ndarray
    y_train_raw: np.ndarray
    sample_weight_train: np.ndarray | None = None


def _readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DiagnoseError(f"{what} {path}: no such file")
    if path.is_dir():
        raise DiagnoseError(f"{what} {path}: is a directory, expected a file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise DiagnoseError(f"{what} {path}: unreadable ({err.strerror or err})") from None


def read_data(path: Path) -> dict[str, np.ndarray]:
    """The arrays of DATA, checked for presence, numeric type and finiteness."""
    path = Path(path)
    _readable_file(path, "DATA")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except Exception as err:  # noqa: BLE001 — any failure here means "not a readable .npz"
        raise DiagnoseError(f"DATA {path}: not a readable .npz file ({type(err).__name__})") from None
    if not isinstance(arrays, dict):
        raise DiagnoseError(f"DATA {path}: not an .npz archive of named arrays")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise DiagnoseError(f"DATA {path}: missing key {key!r} (has {', '.join(sorted(arrays)) or 'none'})")
    for key, a in arrays.items():
        if key not in ("x_train", "y_train", "x_test", "y_test", "sample_weight_train"):
            continue
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise DiagnoseError(f"DATA {path}: {key} has dtype {a.dtype}, expected numbers")
        if a.ndim == 0 or len(a) == 0:
            raise DiagnoseError(f"DATA {path}: {key} is empty")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise DiagnoseError(f"DATA {path}: {key} contains {bad} NaN/inf values")
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise DiagnoseError(f"DATA {path}: x_{split} has {nx} examples but y_{split} has {ny}")
    if len(arrays["x_train"]) < 2:
        raise DiagnoseError(f"DATA {path}: x_train needs at least 2 examples")
    return arrays


def load_model(path: Path):
    """Read a .keras file (read only; the file is never written)."""
    path = Path(path)
    _readable_file(path, "MODEL")
    import zipfile
    if not zipfile.is_zipfile(path):
        raise DiagnoseError(f"MODEL {path}: not a Keras model (a .keras file is a zip archive; this is not one)")
    import keras
    try:
        model = keras.saving.load_model(path, compile=True)
    except Exception:  # noqa: BLE001 — a custom loss may not deserialize: retry without compiling
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as err:  # noqa: BLE001
            first = (str(err).strip().splitlines() or [""])[0][:160]
            raise DiagnoseError(f"MODEL {path}: not a Keras model ({type(err).__name__}: {first})") from None
    if not isinstance(model, keras.Model):
        raise DiagnoseError(f"MODEL {path}: loads as {type(model).__name__}, not a keras.Model")
    return model


def _labels(y: np.ndarray, out_shape: tuple, split: str) -> tuple[np.ndarray, str, str]:
    """(labels for the metric, kind, form) or DiagnoseError."""
    n_out = len(out_shape)
    if n_out == 2:
        c = out_shape[-1]
        if y.ndim == 2 and y.shape[1] == 1 and c == 1:
            y = y[:, 0]
        if y.ndim == 1:
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise DiagnoseError(f"y_{split}: class labels must be whole numbers")
            hi = max(c, 2) - 1
            lo_v, hi_v = y.min(), y.max()
            if lo_v < 0 or hi_v > hi:
                raise DiagnoseError(f"y_{split}: labels out of range: found {lo_v:g}..{hi_v:g}, "
                                    f"the model's {c} output(s) allow 0..{hi}")
            return y.astype(np.int64), "classes", "integer classes (N,)"
        if y.ndim == 2 and y.shape[1] == c:
            if not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
                raise DiagnoseError(f"y_{split}: labels out of range: a one-hot (N, {c}) row must hold one 1 and zeros")
            return np.argmax(y, axis=1).astype(np.int64), "classes", f"one-hot (N, {c})"
        raise DiagnoseError(f"y_{split} has shape {y.shape}, which does not fit the model output (N, {c})")
    if n_out == 3 and out_shape[-1] == 1:
        t = out_shape[1]
        yy = y[..., 0] if (y.ndim == 3 and y.shape[-1] == 1) else y
        if yy.ndim != 2 or (t is not None and yy.shape[1] != t):
            raise DiagnoseError(f"y_{split} has shape {y.shape}, which does not fit the model output "
                                f"(N, {t}, 1): expected (N, {t}) or (N, {t}, 1)")
        if not np.all((yy == 0) | (yy == 1)):
            raise DiagnoseError(f"y_{split}: labels out of range: per-timestep labels must be 0 or 1")
        return yy.astype(np.float32), "timestep", f"per-timestep binary {'(N, T, 1)' if y.ndim == 3 else '(N, T)'}"
    raise DiagnoseError(f"the model output has shape {('N',) + tuple(out_shape[1:])}: diagnose handles "
                        "(N, C) class outputs and (N, T, 1) per-timestep outputs")


def load_inputs(model_path, data_path) -> Inputs:
    """Everything the checks need, or DiagnoseError naming the first problem."""
    model_path, data_path = Path(model_path), Path(data_path)
    _readable_file(model_path, "MODEL")
    arrays = read_data(data_path)
    model = load_model(model_path)
    model_inputs = getattr(model, "inputs", None) or []
    if len(model_inputs) > 1:
        raise DiagnoseError(f"MODEL {model_path}: has {len(model.inputs)} inputs; diagnose needs one input and one output")
    x_train = arrays["x_train"].astype(np.float32)
    x_test = arrays["x_test"].astype(np.float32)
    try:
        expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    except Exception:  # noqa: BLE001
        expected = None
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if expected is not None and (len(expected) != x.ndim - 1 or any(
                e is not None and e != s for e, s in zip(expected, x.shape[1:]))):
            raise DiagnoseError(f"{name} has shape {x.shape}, which does not fit the model input "
                                f"{('N',) + tuple(expected)}")
    try:
        out = model(x_train[:2], training=False)
    except Exception as err:  # noqa: BLE001
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise DiagnoseError(f"x_train of shape {x_train.shape} does not fit the model ({type(err).__name__}: {first})") from None
    if isinstance(out, (list, tuple, dict)):
        raise DiagnoseError(f"MODEL {model_path}: has several outputs; diagnose needs one input and one output")
    out_shape = (None,) + tuple(np.shape(out)[1:])
    y_train, kind, form = _labels(arrays["y_train"], out_shape, "train")
    y_test, kind_test, _ = _labels(arrays["y_test"], out_shape, "test")
    if kind_test != kind:
        raise DiagnoseError("y_train and y_test have different label forms")
    if kind == "timestep" and y_train.shape[1] != y_test.shape[1]:
        raise DiagnoseError(f"y_train has {y_train.shape[1]} timesteps but y_test has {y_test.shape[1]}")
    sw = arrays.get("sample_weight_train")
    if sw is not None:
        sw = sw.astype(np.float32)
        if sw.shape not in ((len(x_train),), tuple(y_train.shape)):
            raise DiagnoseError(f"sample_weight_train has shape {sw.shape}, expected ({len(x_train)},)"
                                + (f" or {tuple(y_train.shape)}" if kind == "timestep" else ""))
        if np.any(sw < 0):
            raise DiagnoseError("sample_weight_train: weights out of range: found negative weights")
    y_loss = (y_train.reshape(y_train.shape + (1,)) if kind == "timestep" else y_train)
    return Inputs(model=model, model_path=model_path, x_train=x_train, y_train=y_train, x_test=x_test,
                  y_test=y_test, kind=kind, label_form=form, num_outputs=int(out_shape[-1]),
                  y_loss_train=y_loss, y_train_raw=arrays["y_train"], sample_weight_train=sw)


# ---------------------------------------------------------------- measurements


def metric(inputs: Inputs, x: np.ndarray, y: np.ndarray, *, training: bool = False, batch_size: int = 512) -> float:
    """Accuracy (classes) or PR-AUC over all timesteps (per-timestep labels), in either BN mode."""
    from .training import accuracy, predict_proba
    if inputs.kind == "classes":
        return accuracy(inputs.model, x, y, training=training, batch_size=batch_size)
    from .imbalanced import pr_auc
    return pr_auc(y, predict_proba(inputs.model, x, training=training, batch_size=batch_size)[..., 0])


def precise_statistics(model, x: np.ndarray, *, batch_size: int = 512):
    """Precise BN with the lessons' helpers (helpers.batchnorm): returns (errors, stats), errors[name] the
    relative error of the stored moving variance against the exact one with earlier layers as stored
    (running_variance_error), stats the [(mean, var)] that precise_bn assigned. Changes the model's BN
    statistics: call it inside preserved_bn_state(model) to put them back."""
    from .batchnorm import bn_layers, precise_bn, running_variance_error
    layers = bn_layers(model)
    errors = dict(zip((l.name for l in layers), running_variance_error(model, x, batch_size=batch_size)))
    return errors, precise_bn(model, x, batch_size=batch_size)


def check_bn(inputs: Inputs) -> tuple[dict | None, list[str], dict]:
    """bn_statistics: metric with stored vs recomputed statistics, per-layer variance error, stale."""
    from .batchnorm import bn_layers, preserved_bn_state
    model = inputs.model
    layers = bn_layers(model)
    if not layers:
        return None, ["bn_statistics is null: the model has no BatchNormalization layer, so there are no "
                      "moving statistics to go stale."], {}
    as_stored = metric(inputs, inputs.x_test, inputs.y_test)
    with preserved_bn_state(model):
        errors, _ = precise_statistics(model, inputs.x_train)        # precise BN, weights frozen
        recomputed = metric(inputs, inputs.x_test, inputs.y_test)
    worst_layer = max(errors, key=errors.get)
    worst = errors[worst_layer]
    change = recomputed - as_stored
    stale = bool(worst > STALE_VARIANCE_ERROR or abs(change) > STALE_METRIC_CHANGE)
    name = "accuracy" if inputs.kind == "classes" else "PR-AUC"
    if stale:
        text = (f"Your BN statistics are stale: the stored moving variance of layer {worst_layer!r} is off the exact "
                f"population variance by a relative error of {worst:.3g} (threshold {STALE_VARIANCE_ERROR}), and recomputing "
                f"exact statistics on x_train moves the test {name} from {as_stored:.3f} to {recomputed:.3f} "
                f"(threshold ±{STALE_METRIC_CHANGE}). Recompute them (precise BN) before you save, or train "
                f"longer / with a lower BN momentum")
        found = [_finding(text, "warmup"), _finding("How to recompute them, weights frozen", "precise")]
    else:
        text = (f"Your BN statistics are current: the largest relative moving-variance error is {worst:.3g} "
                f"(layer {worst_layer!r}, threshold {STALE_VARIANCE_ERROR}) and recomputing them moves the "
                f"test {name} by {change:+.3f} (threshold ±{STALE_METRIC_CHANGE})")
        found = [_finding(text, "precise")]
    result = {"metric_as_stored": as_stored, "metric_recomputed": recomputed,
              "relative_variance_error": errors, "stale": stale}
    return result, found, {}


def check_batch1(inputs: Inputs, n: int = 32, n_constant: int = 8) -> tuple[dict, list[str]]:
    """One sample at a time vs batched, inference mode; and BN layers constant at batch 1 in training mode."""
    from .batchnorm import LayerTap, bn_layers, preserved_bn_state
    from .training import predict_proba
    model = inputs.model
    xs = inputs.x_test[:min(n, len(inputs.x_test))]
    batched = predict_proba(model, xs, batch_size=len(xs))
    single = np.concatenate([predict_proba(model, xs[i:i + 1], batch_size=1) for i in range(len(xs))])
    diff = float(np.max(np.abs(batched.astype(np.float64) - single)))
    found = []
    if diff <= BATCH1_TOLERANCE:
        found.append(_finding(f"Batch-1 inference matches batched inference: the largest output difference over "
                              f"{len(xs)} test examples is {diff:.2e} (tolerance {BATCH1_TOLERANCE:g})", "batch1"))
    else:
        found.append(_finding(f"Batch-1 inference does NOT match batched inference: outputs differ by up to {diff:.3g} "
                              f"(tolerance {BATCH1_TOLERANCE:g}); something in the model depends on its batch-mates "
                              "in inference mode", "batch1"))
    layers = bn_layers(model)
    if not layers:
        found.append("batch1.training_mode_constant_layers is null: the model has no BatchNormalization layer.")
        return {"max_abs_diff_vs_batched": diff, "training_mode_constant_layers": None}, found
    constant = []
    with preserved_bn_state(model), LayerTap(layers, "output") as tap:
        for i in range(min(n_constant, len(xs))):
            model(xs[i:i + 1], training=True)
    for layer in layers:
        out = tap.values(layer).astype(np.float64)
        beta = np.asarray(layer.beta, np.float64) if getattr(layer, "beta", None) is not None else 0.0
        if np.max(np.abs(out - beta)) <= CONSTANT_TOLERANCE * (1.0 + np.max(np.abs(beta))):
            constant.append(layer.name)
    if constant:
        found.append(_finding(f"In training mode at batch 1, BN layer(s) {', '.join(constant)} output their β for every "
                              "input (a batch of one has zero variance), so a prediction made with training=True "
                              "one sample at a time ignores the input. Predict in inference mode", "streaming"))
    return {"max_abs_diff_vs_batched": diff, "training_mode_constant_layers": constant}, found


def check_gap(inputs: Inputs, batch_size: int, test_inference: float | None = None) -> tuple[dict, list[str]]:
    """Lesson 04's decomposition: train metric in training mode (what fit reports), in inference mode, test.
    test_inference: the test metric in inference mode when already measured (bn_statistics.metric_as_stored)."""
    train_training = metric(inputs, inputs.x_train, inputs.y_train, training=True, batch_size=batch_size)
    train_inference = metric(inputs, inputs.x_train, inputs.y_train)
    if test_inference is None:
        test_inference = metric(inputs, inputs.x_test, inputs.y_test)
    mismatch, overfit = train_training - train_inference, train_inference - test_inference
    name = "accuracy" if inputs.kind == "classes" else "PR-AUC"
    parts = []
    if abs(mismatch) > GAP_THRESHOLD:
        parts.append(f"{mismatch:+.3f} of it is the mode mismatch (BN batch statistics or dropout in training mode), "
                     "not overfitting")
    if overfit > GAP_THRESHOLD:
        parts.append(f"{overfit:+.3f} is real overfitting (train vs test, both in inference mode)")
    verdict = "; ".join(parts) if parts else f"neither part exceeds {GAP_THRESHOLD}"
    text = (f"Gap decomposition ({name}): training data in training mode at batch {batch_size} {train_training:.3f}, "
            f"in inference mode {train_inference:.3f}, test data in inference mode {test_inference:.3f}: {verdict}")
    return ({"train_metric_training_mode": train_training, "train_metric_inference_mode": train_inference,
             "test_metric_inference_mode": test_inference}, [_finding(text, "gap")])


def _from_logits(inputs: Inputs) -> bool:
    """True when the outputs look like logits rather than probabilities."""
    out = np.asarray(inputs.model(inputs.x_train[:64], training=False), np.float64)
    if np.any(out < -1e-6) or np.any(out > 1 + 1e-6):
        return True
    if inputs.kind == "classes" and out.shape[-1] > 1:
        return not np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)
    return False


def loss_function(inputs: Inputs):
    """The model's compiled loss when it is a single one, else the cross-entropy its labels call for.
    Returns (fn(y, pred, sample_weight) -> scalar, description)."""
    import keras
    compiled = getattr(inputs.model, "loss", None)
    if compiled is not None and not isinstance(compiled, (list, tuple, dict)):
        try:
            fn = keras.losses.get(compiled) if isinstance(compiled, str) else compiled
            sample_pred = inputs.model(inputs.x_train[:2], training=False)
            sw = None if inputs.sample_weight_train is None else inputs.sample_weight_train[:2]
            value = _call_loss(fn, inputs.y_loss_train[:2], sample_pred, sw)
            if np.isfinite(float(value)):
                return fn, f"the model's compiled loss ({getattr(fn, 'name', None) or getattr(fn, '__name__', compiled)})"
        except Exception:  # noqa: BLE001 — fall back to the default for these labels
            pass
    logits = _from_logits(inputs)
    if inputs.kind == "classes" and inputs.num_outputs > 1:
        fn = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    else:
        fn = keras.losses.BinaryCrossentropy(from_logits=logits)
    return fn, f"{type(fn).__name__}(from_logits={logits}) (the model has no single compiled loss)"


def _call_loss(fn, y, pred, sample_weight):
    import keras
    y = np.asarray(y, np.float32) if not (np.issubdtype(np.asarray(y).dtype, np.integer)) else np.asarray(y)
    if isinstance(fn, keras.losses.Loss):
        return fn(y, pred, sample_weight=sample_weight)
    per = fn(y, pred)
    if sample_weight is not None:
        sw = np.asarray(sample_weight, np.float32)
        per = per * sw.reshape(sw.shape + (1,) * (len(per.shape) - sw.ndim))
    return keras.ops.mean(per)


def batch_gradient_sq_norms(model, loss_fn, x, y, sample_weight, batch_size: int, n_batches: int,
                            rng: np.random.Generator) -> np.ndarray:
    """|g_B|^2 of the loss gradient over all trainable weights, for `n_batches` random batches of
    `batch_size`, BN in training mode as in fit. (n_batches,)

    Examples are drawn with replacement, so E|g_B|^2 = |G|^2 + tr(Σ)/B holds exactly, the relation
    two_batch_noise_scale inverts (without replacement a factor (N − B)/(N − 1) would bias |G|^2 down
    whenever B is not much smaller than N)."""
    import tensorflow as tf
    from .batchnorm import preserved_bn_state
    variables = model.trainable_variables
    norms = []
    with preserved_bn_state(model):  # training=True updates the moving statistics: put them back
        for _ in range(n_batches):
            idx = np.sort(rng.choice(len(x), size=batch_size, replace=True))
            sw = None if sample_weight is None else sample_weight[idx]
            with tf.GradientTape() as tape:
                loss = _call_loss(loss_fn, y[idx], model(x[idx], training=True), sw)
            grads = tape.gradient(loss, variables)
            norms.append(float(sum(tf.reduce_sum(tf.square(tf.cast(g, tf.float64))) for g in grads if g is not None)))
    return np.asarray(norms)


def check_noise(inputs: Inputs, batch_size: int, seed: int, progress=None) -> tuple[dict, list[str], dict]:
    """B_simple from |g_B|^2 at two batch sizes (McCandlish et al. 2018, app. A), and the batch it suggests."""
    from .gradient_noise import two_batch_noise_scale
    n = len(inputs.x_train)
    b_small = max(2, min(batch_size, n // (2 * BIG_FACTOR)))
    b_big = min(BIG_FACTOR * b_small, n // 2)
    if b_big <= b_small:
        return ({"b_simple": None, "suggested_max_batch": None},
                [f"noise is null: x_train has only {n} examples, too few for two batch sizes."], {})
    loss_fn, loss_desc = loss_function(inputs)
    rng = np.random.default_rng(seed)
    small = batch_gradient_sq_norms(inputs.model, loss_fn, inputs.x_train, inputs.y_loss_train,
                                    inputs.sample_weight_train, b_small, SMALL_BATCHES, rng)
    if progress:
        progress()
    big = batch_gradient_sq_norms(inputs.model, loss_fn, inputs.x_train, inputs.y_loss_train,
                                  inputs.sample_weight_train, b_big, BIG_BATCHES, rng)
    est = two_batch_noise_scale(small, b_small, big, b_big)
    extra = {"b_small": b_small, "b_big": b_big, "small_sq_norms": small, "big_sq_norms": big,
             "grad_norm_sq": est.grad_norm_sq, "trace_sigma": est.trace_sigma, "loss": loss_desc}
    if not (est.grad_norm_sq > 0 and est.trace_sigma > 0 and math.isfinite(est.b_simple)):
        why = ("the |G|² estimate is not positive: at these weights the gradient is mostly noise (e.g. a model "
               "near a minimum), so B_simple is larger than these batch sizes can resolve"
               if est.grad_norm_sq <= 0 else "the tr(Σ) estimate is not positive (the two batch sizes gave "
               "the same gradient norm within noise)")
        return ({"b_simple": None, "suggested_max_batch": None},
                [_finding(f"noise.b_simple is null: {why}; measured |g|² at batch {b_small} and {b_big}", "noise")],
                extra)
    b_simple = float(est.b_simple)
    cap = min(b_simple, n)
    suggested = int(2 ** math.floor(math.log2(cap))) if cap >= 1 else 1
    text = (f"Gradient noise scale B_simple ≈ {b_simple:.0f} examples at the current weights (from |g|² at batch "
            f"{b_small} and {b_big}, {loss_desc}). Rule: steps ≈ S_min·(1 + B_simple/B), so doubling a batch B saves "
            f"B_simple/(2(B + B_simple)) of the steps — at least a quarter up to B = B_simple, less beyond. Suggested "
            f"largest batch: the largest power of two ≤ B_simple (and ≤ the {n} training examples), {suggested}"
            f"{'; B_simple exceeds the training set, so even full-batch steps are noise-dominated' if b_simple > n else ''}"
            "; B_simple grows as training proceeds, so measure again later in training")
    return {"b_simple": b_simple, "suggested_max_batch": suggested}, [_finding(text, "noise")], extra


def check_timestep(inputs: Inputs) -> tuple[dict | None, list[str]]:
    """Positive fraction, neg/pos weight, whether Keras's class_weight would weight these labels wrongly, PR-AUC."""
    if inputs.kind != "timestep":
        return None, ["timestep is null: the labels have no time axis (they are " + inputs.label_form + ")."]
    from .imbalanced import pr_auc, positive_weight_for, timestep_weights
    from .training import predict_proba
    y = inputs.y_train
    fraction = float(y.mean())
    weight = positive_weight_for(y)
    intended = timestep_weights(y, weight)                       # what lesson 06 passes as sample_weight
    share_intended = float((intended * y).sum() / intended.sum())
    try:  # what Keras itself makes of class_weight for these targets (its own function, not a copy)
        from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights
        per_series = np.asarray(class_weight_to_sample_weights(inputs.y_train_raw, {0: 1.0, 1: weight}), np.float64)
        refused = None
    except Exception as err:  # noqa: BLE001 — Keras refusing these targets is the finding
        per_series, refused = None, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:100]}"
    if refused is not None:
        trap = True
        how = (f"Keras refuses class_weight for {inputs.label_form} targets ({refused}); pass sample_weight of "
               "shape (N, T) instead")
    else:
        keras_w = np.broadcast_to(per_series[:, None], y.shape)
        share_keras = float((keras_w * y).sum() / keras_w.sum())
        off = abs(share_keras - share_intended) / share_intended
        trap = bool(off > CLASS_WEIGHT_TRAP_RATIO)
        how = (f"Keras takes the argmax over T as each series' class and weights whole series, so with "
               f"class_weight={{0: 1, 1: {weight:.1f}}} the positive steps carry {share_keras:.1%} of the total "
               f"weight instead of the per-step weighting's {share_intended:.1%} ({off:.0%} off, threshold "
               f"{CLASS_WEIGHT_TRAP_RATIO:.0%})")
    test_auc = pr_auc(inputs.y_test, predict_proba(inputs.model, inputs.x_test)[..., 0])
    text = (f"Per-timestep labels: {fraction:.2%} of the training steps are positive, so the weight that balances "
            f"them is neg/pos = {weight:.1f}. class_weight trap: {'yes' if trap else 'no'} — {how}. "
            f"{'Use sample_weight of shape (N, T) with targets (N, T, 1) instead. ' if trap else ''}"
            f"Test PR-AUC {test_auc:.3f} (a constant predictor scores the positive rate, "
            f"{float(inputs.y_test.mean()):.3f})")
    found = [_finding(text, "timestep")]
    if inputs.sample_weight_train is not None and inputs.sample_weight_train.ndim == 1:
        found.append(_finding("sample_weight_train has one weight per series (N,), not per timestep (N, T): "
                              "it cannot up-weight the positive steps", "timestep"))
    return {"positive_fraction": fraction, "suggested_positive_weight": float(weight),
            "class_weight_trap": trap, "pr_auc_test": test_auc}, found


# ---------------------------------------------------------------- the diagnosis


@dataclass
class Diagnosis:
    """What diagnose() returns: report (the report.json dict), figures {name: PNG bytes},
    details (what was run, and the raw measurements behind the plots)."""
    report: dict
    figures: dict[str, bytes] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    model_path: str = ""
    data_path: str = ""
    inputs: Any = field(default=None, repr=False)   # the loaded model and data (BN state as loaded)

    @property
    def markdown(self) -> str:
        return render_markdown(self)

    @property
    def html(self) -> str:
        return render_html(self)

    def _repr_html_(self) -> str:
        return self.html


def diagnose(model_path, data_path, *, batch_size: int = 32, only=None, seed: int = 0,
             progress: bool = True, plots: bool = True) -> Diagnosis:
    """Run the checks on MODEL and DATA; raises DiagnoseError on bad input (before any check runs)."""
    from tqdm.auto import tqdm
    only = tuple(CHECKS if only is None else only)
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise DiagnoseError(f"--only: unknown check(s) {', '.join(unknown)}; allowed: {', '.join(CHECKS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise DiagnoseError(f"--batch-size {batch_size!r}: expected an integer ≥ 2")
    inputs = load_inputs(model_path, data_path)
    from .batchnorm import bn_layers
    n_bn = len(bn_layers(inputs.model))
    report: dict[str, Any] = {"bn_layers": n_bn, "bn_statistics": None, "batch1": None, "gap": None,
                              "noise": None, "timestep": None, "findings": []}
    details: dict[str, Any] = {"kind": inputs.kind, "label_form": inputs.label_form, "batch_size": batch_size,
                               "n_train": len(inputs.x_train), "n_test": len(inputs.x_test),
                               "parameters": int(inputs.model.count_params()), "only": list(only)}
    findings = report["findings"]
    steps = len(only) + ("noise" in only)
    with tqdm(total=steps, desc="diagnose", unit="check", disable=not progress, file=sys.stderr) as bar:
        def tick(name=None):
            if name:
                bar.set_postfix_str(name, refresh=False)
            bar.update(1)
        if "bn" in only:
            report["bn_statistics"], found, extra = check_bn(inputs)
            findings += found
            details["bn"] = extra
            tick("bn")
        if "batch1" in only:
            report["batch1"], found = check_batch1(inputs)
            findings += found
            tick("batch1")
        if "gap" in only:
            stored = (report["bn_statistics"] or {}).get("metric_as_stored")
            report["gap"], found = check_gap(inputs, batch_size, stored)
            findings += found
            tick("gap")
        if "noise" in only:
            report["noise"], found, details["noise"] = check_noise(inputs, batch_size, seed, progress=tick)
            findings += found
            tick("noise")
        if "timestep" in only:
            report["timestep"], found = check_timestep(inputs)
            findings += found
            tick("timestep")
    for name in CHECKS:
        if name not in only:
            key = {"bn": "bn_statistics"}.get(name, name)
            findings.append(f"{key} is null: not run (--only {','.join(only)}).")
    diag = Diagnosis(report=report, details=details, model_path=str(model_path), data_path=str(data_path),
                     inputs=inputs)
    if plots:
        diag.figures = make_figures(diag)
    return diag


# ---------------------------------------------------------------- plots and report


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def make_figures(diag: Diagnosis) -> dict[str, bytes]:
    """One PNG per applicable check; each title states what the plot shows."""
    from .workbook.plotting import figure
    r, figs = diag.report, {}
    bn = r.get("bn_statistics")
    if bn:
        names = list(bn["relative_variance_error"])
        errs = [max(bn["relative_variance_error"][k], 1e-6) for k in names]
        worst = max(errs)
        fig, ax = figure(finding=(f"BN statistics stale: variance off by up to {worst:.0%}" if bn["stale"]
                                  else f"BN statistics current: variance within {worst:.1%}"),
                         width=max(5.0, 0.9 * len(names) + 2.5))
        ax.bar(range(len(names)), errs, color=["tab:red" if e > STALE_VARIANCE_ERROR else "tab:blue" for e in errs])
        ax.axhline(STALE_VARIANCE_ERROR, color="k", ls="--", lw=1, label=f"threshold {STALE_VARIANCE_ERROR:.0%}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("|stored − exact| / exact moving variance")
        ax.legend()
        figs["bn_statistics"] = _png(fig)
    gap = r.get("gap")
    if gap:
        values = [gap["train_metric_training_mode"], gap["train_metric_inference_mode"], gap["test_metric_inference_mode"]]
        mismatch, overfit = values[0] - values[1], values[1] - values[2]
        fig, ax = figure(finding=f"Gap: mode mismatch {mismatch:+.2f}, overfitting {overfit:+.2f}")
        labels = ["train\ntraining mode", "train\ninference mode", "test\ninference mode"]
        ax.bar(labels, values, color=["tab:orange", "tab:blue", "tab:green"])
        if bn:
            ax.axhline(bn["metric_recomputed"], color="k", ls=":", lw=1, label="test after recomputing BN statistics")
            ax.legend()
        ax.set_ylabel("accuracy" if diag.details["kind"] == "classes" else "PR-AUC")
        ax.set_ylim(0, 1.05)
        figs["gap"] = _png(fig)
    noise = diag.details.get("noise") or {}
    if r.get("noise") and r["noise"]["b_simple"] is not None:
        b_simple = r["noise"]["b_simple"]
        fig, (ax1, ax2) = figure(ncols=2, finding=f"B_simple ≈ {b_simple:.0f}: batches beyond it buy few steps")
        for b, norms in ((noise["b_small"], noise["small_sq_norms"]), (noise["b_big"], noise["big_sq_norms"])):
            ax1.scatter(np.full(len(norms), 1.0 / b), norms, s=10, alpha=0.5)
            ax1.scatter([1.0 / b], [np.mean(norms)], color="k", marker="_", s=300)
        inv = np.linspace(0, 1.0 / noise["b_small"] * 1.1, 50)
        ax1.plot(inv, noise["grad_norm_sq"] + noise["trace_sigma"] * inv, "k--", lw=1,
                 label="|G|² + tr(Σ)/B through the means")
        ax1.set_xlabel("1 / batch size")
        ax1.set_ylabel("|g_B|²")
        ax1.legend()
        bs = np.logspace(0, math.log10(max(8 * b_simple, 16)), 100)
        ax2.plot(bs, 1 + b_simple / bs)
        ax2.axvline(b_simple, color="k", ls="--", lw=1, label=f"B_simple ≈ {b_simple:.0f}")
        ax2.axvline(r["noise"]["suggested_max_batch"], color="tab:green", ls=":", label="suggested max")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("batch size B")
        ax2.set_ylabel("steps / S_min = 1 + B_simple / B")
        ax2.legend()
        figs["noise"] = _png(fig)
    return figs


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _rows(report: dict) -> list[tuple[str, str]]:
    rows = [("bn_layers", _fmt(report["bn_layers"]))]
    for key in ("bn_statistics", "batch1", "gap", "noise", "timestep"):
        section = report[key]
        if section is None:
            rows.append((key, "null"))
        else:
            rows += [(f"{key}.{k}", _fmt(v)) for k, v in section.items()]
    return rows


def _md_link(sentence: str) -> str:
    """Turn the trailing 'notebooks/...#...' of a finding into a Markdown link."""
    for key in LESSONS:
        link = lesson_link(key)
        if link in sentence:
            sentence = sentence.replace(link, f"[{link.split('#')[0].split('/')[-1]}]({link})")
    return sentence


RULES = [
    f"bn_statistics.stale: some layer's moving variance is off the exact population variance (recomputed on x_train, "
    f"weights frozen) by more than {STALE_VARIANCE_ERROR:.0%}, or recomputing changes the test metric by more than "
    f"{STALE_METRIC_CHANGE}.",
    f"batch1: outputs match when they differ by at most {BATCH1_TOLERANCE:g}; a BN layer is constant at batch 1 when "
    f"its training-mode output is within {CONSTANT_TOLERANCE:g}·(1 + |β|) of β.",
    f"gap: a part is named when it exceeds {GAP_THRESHOLD}.",
    "noise.suggested_max_batch: the largest power of two ≤ min(B_simple, training examples) (steps ≈ S_min·(1 + B_simple/B), McCandlish et al. "
    "2018: up to B_simple each doubling of the batch still saves at least a quarter of the steps).",
    "timestep.class_weight_trap: Keras refuses class_weight for these targets, or the share of the total weight it "
    f"gives the positive steps is more than {CLASS_WEIGHT_TRAP_RATIO:.0%} away from the per-step weighting's "
    "(sample_weight with positive weight neg/pos).",
]


def render_markdown(diag: Diagnosis) -> str:
    d, r = diag.details, diag.report
    lines = [f"# Diagnosis of {Path(diag.model_path).name}", "",
             f"Model `{diag.model_path}` ({d['parameters']:,} parameters, {r['bn_layers']} BatchNormalization "
             f"layer(s)); data `{diag.data_path}`: {d['n_train']:,} training and {d['n_test']:,} test examples, "
             f"labels {d['label_form']}, metric {'accuracy' if d['kind'] == 'classes' else 'PR-AUC'}; batch size "
             f"{d['batch_size']}.", "", "## Findings", ""]
    lines += [f"- {_md_link(f)}" for f in r["findings"]]
    lines += ["", "## Numbers (report.json)", "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in _rows(r)]
    lines += ["", "## Rules", ""] + [f"- {rule}" for rule in RULES]
    lines += ["", "The plots are in report.html.", ""]
    return "\n".join(lines)


def render_html(diag: Diagnosis) -> str:
    r = diag.report
    e = html.escape
    parts = [f"<h1>Diagnosis of {e(Path(diag.model_path).name)}</h1>", "<h2>Findings</h2><ul>"]
    for f in r["findings"]:
        text = e(f)
        for key in LESSONS:
            link = e(lesson_link(key))
            text = text.replace(link, f'<a href="{link}">{link}</a>')
        parts.append(f"<li>{text}</li>")
    parts.append("</ul><h2>Plots</h2>")
    for name, png in diag.figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<p><img alt="{e(name)}" src="data:image/png;base64,{data}"></p>')
    parts.append("<h2>Numbers (report.json)</h2><table border=1 cellpadding=4><tr><th>key</th><th>value</th></tr>")
    parts += [f"<tr><td><code>{e(k)}</code></td><td>{e(v)}</td></tr>" for k, v in _rows(r)]
    parts.append("</table><h2>Rules</h2><ul>" + "".join(f"<li>{e(rule)}</li>" for rule in RULES) + "</ul>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Diagnosis</title></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_report(diag: Diagnosis, out_dir) -> Path:
    """Write report.json, report.md, report.html into out_dir: built in a temporary folder beside it
    and moved into place at the end, so a failure leaves out_dir as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(_jsonable(diag.report), indent=2) + "\n")
        (tmp / "report.md").write_text(diag.markdown)
        (tmp / "report.html").write_text(diag.html)
        if out_dir.exists():
            for name in ("report.json", "report.md", "report.html"):
                os.replace(tmp / name, out_dir / name)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        print(f"workbook-diagnose: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbook-diagnose", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a Keras 3 .keras file")
    p.add_argument("data", metavar="DATA", help="an .npz with x_train, y_train, x_test, y_test [, sample_weight_train]")
    p.add_argument("--out", metavar="DIR", help="where the report goes (default build/diagnose/<model stem>/)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="the batch size you train with (training-mode scoring, gradient noise); default 32")
    p.add_argument("--only", metavar="CHECKS", help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--seed", type=int, default=0, help="seeds the batches drawn for the noise scale; default 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    only = None if args.only is None else [c.strip() for c in args.only.split(",") if c.strip()]
    out = Path(args.out) if args.out else Path("build") / "diagnose" / Path(args.model).stem
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        for path, what in ((Path(args.model), "MODEL"), (Path(args.data), "DATA")):
            _readable_file(path, what)          # before the slow TensorFlow import
        if out.exists() and not out.is_dir():
            raise DiagnoseError(f"--out {out}: exists and is not a directory")
        from .workbook.environment import quiet_tensorflow
        quiet_tensorflow()
        diag = diagnose(args.model, args.data, batch_size=args.batch_size, only=only, seed=args.seed,
                        progress=not args.quiet)
    except DiagnoseError as err:
        print(f"workbook-diagnose: {err}", file=sys.stderr)
        return 2
    write_report(diag, out)
    for sentence in diag.report["findings"]:
        print(f"- {sentence}")
    print(f"report: {out / 'report.md'} (plots in {out / 'report.html'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
