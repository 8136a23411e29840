"""Batch normalization: a NumPy reference implementation, and tools for the
statistics Keras keeps (reading them, recomputing them exactly: "precise BN").

Shapes: x is (N, ..., C) — channels last, as Keras; statistics are taken over
every axis but the last, so a (N, C) dense input and a (N, T, C) or
(N, H, W, C) convolutional input are treated alike.
"""
from __future__ import annotations

import contextlib

import numpy as np


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


def bn_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Training-mode BN: normalize with this batch's mean and *biased* variance, then scale/shift."""
    mean, var = batch_statistics(x)
    return gamma * (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps) + beta


def bn_inference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, moving_mean: np.ndarray,
                 moving_var: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Inference-mode BN: normalize with stored population statistics; each sample independently."""
    return gamma * (np.asarray(x, np.float64) - moving_mean) / np.sqrt(moving_var + eps) + beta


def moving_average_update(moving: np.ndarray, batch_value: np.ndarray, momentum: float) -> np.ndarray:
    """One Keras-style update: moving <- momentum * moving + (1 - momentum) * batch_value."""
    return momentum * moving + (1.0 - momentum) * batch_value


def bn_layers(model) -> list:
    """Every BatchNormalization layer of a Keras model, in forward order (nested models included)."""
    import keras
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
    """(moving_mean, moving_variance) as NumPy arrays for each BN layer of the model."""
    return [(np.asarray(l.moving_mean), np.asarray(l.moving_variance)) for l in bn_layers(model)]


def _layer_inputs(model, layer, x: np.ndarray, batch_size: int) -> np.ndarray:
    import keras
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, layer.input)
    return np.concatenate([np.asarray(probe(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)], axis=0)


def population_statistics(model, x: np.ndarray, *, batch_size: int = 512, assign: bool = False,
                          unbiased: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact per-channel mean and variance of each BN layer's input over all of x.

    Layers are done in forward order with the network in inference mode; with
    assign=True each layer's moving statistics are replaced before the next
    layer's inputs are computed, so later layers see the corrected earlier ones
    ("precise BN": statistics of the inference-mode network, weights fixed).
    Needs a functional (or Sequential) Keras model. Returns [(mean, var)] per layer.
    """
    stats = []
    for layer in bn_layers(model):
        inputs = _layer_inputs(model, layer, x, batch_size)
        mean, var = batch_statistics(inputs, unbiased=unbiased)
        stats.append((mean, var))
        if assign:
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(var.astype(np.float32))
    return stats


def precise_bn(model, x: np.ndarray, *, batch_size: int = 512) -> list[tuple[np.ndarray, np.ndarray]]:
    """Replace every BN layer's moving statistics by the exact population statistics of x.

    x: training inputs (never test data: that would be test-time adaptation).
    Returns the statistics assigned, one (mean, var) per BN layer.
    """
    return population_statistics(model, x, batch_size=batch_size, assign=True)


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
