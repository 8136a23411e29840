"""Batch normalization: the statistics a batch gives and the ones Keras keeps (reading them,
recomputing them exactly: "precise BN"). The NumPy forward pass is lesson 02's `bn_forward`,
written on its page and generated into helpers/lessons/l02.py.

Shapes: x is (N, ..., C) — channels last, as Keras; statistics are taken over
every axis but the last, so a (N, C) dense input and a (N, T, C) or
(N, H, W, C) convolutional input are treated alike.
"""
from __future__ import annotations

import contextlib
import weakref

import numpy as np

from .workbook.frameworks import keras, tf


def batch_statistics(x: np.ndarray, *, unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over all axes but the last: two (C,) arrays.

    unbiased=False divides by m (what BN normalizes with in training);
    unbiased=True divides by m - 1 (Ioffe & Szegedy's Algorithm 2 at inference).
    """
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim - 1))
    m = int(np.prod([x.shape[a] for a in axes]))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes, ddof=1 if unbiased else 0) if (m > 1 or not unbiased) else np.full(x.shape[-1], np.nan)
    return mean, var


def moving_average_update(moving: np.ndarray, batch_value: np.ndarray, momentum: float) -> np.ndarray:
    """One Keras-style update: moving <- momentum * moving + (1 - momentum) * batch_value."""
    return momentum * moving + (1.0 - momentum) * batch_value


def bn_layers(model) -> list:
    """Every BatchNormalization layer of a Keras model, in forward order (nested models included)."""
    found = []

    def walk(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            walk(sub)

    for layer in model.layers:
        walk(layer)
    return found


@contextlib.contextmanager
def preserved_bn_state(model):
    """Put every BN layer's non-trainable state back on exit: moving mean and variance,
    and batch renormalization's extra moving statistics where the layer has them.

    Keras 3 updates these on *every* call with training=True, not only inside fit,
    so scoring a model in training mode would otherwise change how it predicts in
    inference mode. This is the workbook's one implementation of that guard.
    """
    layers = bn_layers(model)
    saved = [[np.array(v.numpy()) for v in layer.non_trainable_variables] for layer in layers]
    try:
        yield
    finally:
        for layer, values in zip(layers, saved):
            for variable, value in zip(layer.non_trainable_variables, values):
                variable.assign(value)


def moving_statistics(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """Copies of (moving_mean, moving_variance) as NumPy arrays for each BN layer of the model."""
    return [(np.array(l.moving_mean.numpy()), np.array(l.moving_variance.numpy())) for l in bn_layers(model)]


def assign_moving_statistics(model, stats) -> None:
    """Write [(mean, var)] (one (C,) pair per BN layer, forward order) into the moving statistics."""
    for layer, (mean, var) in zip(bn_layers(model), stats):
        layer.moving_mean.assign(np.asarray(mean, np.float32))
        layer.moving_variance.assign(np.asarray(var, np.float32))


_INPUT_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def bn_inputs(model, *, compiled: bool = False):
    """A function x (N, ...) -> [the input of each BN layer] (forward order), inference mode,
    sharing `model`'s layers. compiled=True: one tf.function, traced once and cached on the
    model; it reads the variables at every call, so later assignments are seen.
    """
    key = bool(compiled)
    fns = _INPUT_FNS.setdefault(model, {})
    if key not in fns:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        feature_model = keras.Model(inputs, [l.input for l in bn_layers(model)])
        fn = lambda x: feature_model(x, training=False)  # noqa: E731
        if compiled:
            fn = tf.function(fn, reduce_retracing=True)
        fns[key] = fn
    return fns[key]


class LayerTap:
    """Record the inputs (what="input") or outputs (what="output") of some layers during ordinary
    model calls, nested models included. A sub-model `keras.Model(model.inputs, layer.input)` cannot
    reach a BN layer inside a nested model; this can. values(layer) concatenates what was seen."""

    def __init__(self, layers, what: str = "input"):
        self.layers, self.what = list(layers), what
        self.seen: dict[int, list[np.ndarray]] = {id(l): [] for l in self.layers}

    def __enter__(self):
        for layer in self.layers:
            original = type(layer).call.__get__(layer)
            store = self.seen[id(layer)]

            def call(inputs, *args, _original=original, _store=store, **kwargs):
                out = _original(inputs, *args, **kwargs)
                _store.append(np.asarray(inputs if self.what == "input" else out))
                return out
            object.__setattr__(layer, "call", call)
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            try:
                object.__delattr__(layer, "call")
            except AttributeError:
                pass
        return False

    def values(self, layer) -> np.ndarray:
        return np.concatenate(self.seen[id(layer)], axis=0)


def _input_chunks(model, x: np.ndarray, batch_size: int, compiled: bool):
    """Yield, per chunk of `batch_size` examples, [the input of each BN layer] (inference mode)."""
    try:
        fn = bn_inputs(model, compiled=compiled)
    except (ValueError, AttributeError, TypeError):   # BN inside a nested model: tap the calls instead
        fn = None
    layers = bn_layers(model)
    for i in range(0, len(x), batch_size):
        if fn is not None:
            out = fn(x[i:i + batch_size])
            yield [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        else:
            with LayerTap(layers, "input") as tap:
                model(x[i:i + batch_size], training=False)
            yield [tap.values(l) for l in layers]


def pooled_statistics(acc, chunk: np.ndarray):
    """Fold one chunk's per-channel statistics into acc = (count, mean, M2), the exact pooled mean and
    sum of squared deviations (Chan, Golub & LeVeque 1983), so memory stays at one chunk's activations.
    acc=None starts a new accumulator. chunk: (n, ..., C)."""
    mean_b, var_b = batch_statistics(chunk)                    # biased: var_b * n_b is the chunk's M2
    n_b = int(np.prod(chunk.shape[:-1]))
    if acc is None:
        return n_b, mean_b, var_b * n_b
    n_a, mean_a, m2_a = acc
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + var_b * n_b + delta ** 2 * n_a * n_b / n


def population_statistics(model, x: np.ndarray, *, batch_size: int = 512, assign: bool = False,
                          unbiased: bool = True, compiled: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact per-channel mean and variance of each BN layer's input over all of x.

    The network runs in inference mode, chunk by chunk; statistics are pooled exactly
    (pooled_statistics), so memory stays at one chunk's activations. With assign=True
    layers are done in forward order and each layer's moving statistics are replaced
    before the next layer's inputs are computed, so later layers see the corrected
    earlier ones ("precise BN": statistics of the inference-mode network, weights
    fixed). To get those statistics without changing the model, run it inside
    preserved_bn_state(model). compiled=True computes the layer inputs with one
    cached tf.function (much faster when called repeatedly, e.g. during fit).
    BN layers inside nested models are reached too. Returns [(mean, var)] per layer.
    """
    layers = bn_layers(model)

    def finish(acc):
        n, mean, m2 = acc
        return mean, (m2 / (n - 1) if n > 1 else np.full_like(m2, np.nan)) if unbiased else m2 / n

    if not assign:                                   # one pass serves every layer
        accs = [None] * len(layers)
        for chunk in _input_chunks(model, x, batch_size, compiled):
            accs = [pooled_statistics(a, c) for a, c in zip(accs, chunk)]
        return [finish(a) for a in accs]
    stats = []
    for k, layer in enumerate(layers):
        acc = None
        for chunk in _input_chunks(model, x, batch_size, compiled):
            acc = pooled_statistics(acc, chunk[k])
        mean, var = finish(acc)
        stats.append((mean, var))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return stats


def precise_bn(model, x: np.ndarray, *, batch_size: int = 512, compiled: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Replace every BN layer's moving statistics by the exact population statistics of x.

    x: training inputs (never test data: that would be test-time adaptation).
    Returns the statistics assigned, one (mean, var) per BN layer.
    """
    return population_statistics(model, x, batch_size=batch_size, assign=True, compiled=compiled)


def precise_statistics(model, x: np.ndarray, *, batch_size: int = 1024,
                       compiled: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """The statistics precise_bn would assign (layer by layer, earlier layers corrected),
    with the model left exactly as it was (preserved_bn_state). x: training inputs."""
    with preserved_bn_state(model):
        return precise_bn(model, x, batch_size=batch_size, compiled=compiled)


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over channels of |estimate - truth| / |truth| (truth clipped away from 0)."""
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    return float(np.mean(np.abs(estimate - truth) / np.maximum(np.abs(truth), 1e-8)))


def running_variance_error(model, x: np.ndarray, *, batch_size: int = 512) -> list[float]:
    """Per BN layer: relative error of the stored moving variance against the exact one.

    The exact statistics are computed with the model as it is (earlier layers
    keep their stored statistics), so each number isolates that layer's error.
    """
    errors = []
    for layer, (mean, var) in zip(bn_layers(model), population_statistics(model, x, batch_size=batch_size)):
        errors.append(relative_error(np.asarray(layer.moving_variance), var))
    return errors
