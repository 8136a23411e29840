"""The other checks: batch-1 inference, the gap decomposition, the gradient noise scale and per-timestep
weights. Each returns its report section; core.py turns sections into coded findings."""
from __future__ import annotations

import math
import weakref

import numpy as np

from .codes import (BALANCED_SHARE_TOLERANCE, BATCH1_TOLERANCE, BIG_BATCHES, BIG_FACTOR, BOOTSTRAP,
                    CONSTANT_TOLERANCE, NOISE_RESOLVED_FACTOR, SMALL_BATCHES)
from .metrics import forward


def batch1(inputs, n: int = 32, n_constant: int = 8) -> dict:
    """One sample at a time vs batched (inference mode); BN layers constant at batch 1 in training mode."""
    from ..batchnorm import LayerTap, bn_layers, preserved_bn_state
    model = inputs.model
    xs = inputs.x_test[:min(n, len(inputs.x_test))]
    batched = forward(model, xs, batch_size=len(xs))
    single = np.concatenate([forward(model, xs[i:i + 1], batch_size=1) for i in range(len(xs))])
    diff = float(np.max(np.abs(batched - single)))
    layers = bn_layers(model)
    if not layers:
        return {"examples": len(xs), "max_abs_diff_vs_batched": diff, "match": diff <= BATCH1_TOLERANCE,
                "training_mode_constant_layers": None}
    constant = []
    k = min(n_constant, len(xs))
    with preserved_bn_state(model), LayerTap(layers, "output") as tap:
        for i in range(k):
            model(xs[i:i + 1], training=True)
    with LayerTap(layers, "output") as reference:
        model(xs[:k], training=False)
    for layer in layers:
        if not layer.trainable:       # a frozen BN layer runs in inference mode even with training=True
            continue
        beta = np.asarray(layer.beta, np.float64) if getattr(layer, "beta", None) is not None else 0.0
        out = np.abs(tap.values(layer).astype(np.float64) - beta)
        # constant: |output − β| at batch 1 is float32 rounding next to what the layer outputs in inference mode
        typical = np.max(np.abs(reference.values(layer).astype(np.float64) - beta))
        if np.max(out) <= CONSTANT_TOLERANCE * (1.0 + np.max(np.abs(beta))) + 1e-3 * typical:
            constant.append(layer.name)
    return {"examples": len(xs), "max_abs_diff_vs_batched": diff, "match": diff <= BATCH1_TOLERANCE,
            "training_mode_constant_layers": constant}


def gap(inputs, metric, batch_size: int, out_test=None, seed: int = 0) -> dict:
    """Lesson 04's decomposition: the training data in training mode (what fit reports) and in inference mode,
    and the held-out data in inference mode. Parts are in "better is positive" units of the metric."""
    model, y = inputs.model, inputs.train.metric_y
    out_tr = forward(model, inputs.x_train, training=True, batch_size=batch_size)   # statistics put back
    out_inf = forward(model, inputs.x_train)
    if out_test is None:
        out_test = forward(model, inputs.x_test)
    a, b = metric.value(out_tr, y), metric.value(out_inf, y)
    c = metric.value(out_test, inputs.test.metric_y)
    g = metric.goodness
    mismatch, mismatch_se = metric.paired(out_inf, out_tr, y, seed=seed)
    overfit = g(b) - g(c)
    overfit_se = math.hypot(metric.standard_error(out_inf, y, seed), metric.standard_error(out_test, inputs.test.metric_y, seed))
    return {"train_metric_training_mode": a, "train_metric_inference_mode": b, "test_metric_inference_mode": c,
            "mode_mismatch": mismatch, "mode_mismatch_se": mismatch_se, "overfitting": overfit,
            "overfitting_se": overfit_se, "batch_size": batch_size}


# ---------------------------------------------------------------- gradient noise


def model_loss(inputs, logits: bool):
    """The model's compiled loss when it is a single one that runs on these labels, else the loss the
    task calls for. Returns (fn(y, pred, sample_weight) -> scalar tensor, description)."""
    import keras
    compiled = getattr(inputs.model, "loss", None)
    if compiled is not None and not isinstance(compiled, (list, tuple, dict)):
        try:
            fn = keras.losses.get(compiled) if isinstance(compiled, str) else compiled
            pred = inputs.model(inputs.x_train[:2], training=False)
            value = call_loss(fn, inputs.train.loss_y[:2], pred, None)
            if np.isfinite(float(value)):
                return fn, f"the model's compiled loss ({getattr(fn, 'name', None) or getattr(fn, '__name__', compiled)})"
        except Exception:  # noqa: BLE001 — fall back to the default for these labels
            pass
    if inputs.task == "regression":
        fn = keras.losses.MeanSquaredError()
    elif inputs.task == "classes" and inputs.num_outputs > 1:
        soft = inputs.train.loss_y.ndim == 2
        fn = (keras.losses.CategoricalCrossentropy if soft else keras.losses.SparseCategoricalCrossentropy)(from_logits=logits)
    else:
        fn = keras.losses.BinaryCrossentropy(from_logits=logits)
    return fn, f"{type(fn).__name__}{'' if inputs.task == 'regression' else f'(from_logits={logits})'} (no single compiled loss runs on these labels)"


def call_loss(fn, y, pred, sample_weight):
    import keras
    if isinstance(fn, keras.losses.Loss):
        return fn(y, pred, sample_weight=sample_weight)
    per = fn(y, pred)
    if sample_weight is not None:
        per = per * keras.ops.reshape(sample_weight, keras.ops.shape(sample_weight) + (1,) * (len(per.shape) - len(sample_weight.shape)))
    return keras.ops.mean(per)


_SQ_NORM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def sq_norm_function(model, loss_fn, x_shape: tuple, y: np.ndarray, w_shape: tuple | None):
    """One tf.function |∇ loss|² over all trainable weights, BN in training mode, traced once for any batch
    size (the batch axis is left open) and cached per model and loss."""
    import tensorflow as tf
    weighted = w_shape is not None
    key = (id(loss_fn), tuple(x_shape), np.shape(y)[1:], str(np.asarray(y).dtype), w_shape)
    cache = _SQ_NORM.setdefault(model, {})
    if key in cache:
        return cache[key]
    variables = model.trainable_variables
    specs = [tf.TensorSpec((None,) + tuple(x_shape), tf.float32),
             tf.TensorSpec((None,) + tuple(np.shape(y)[1:]), tf.as_dtype(np.asarray(y).dtype)),
             tf.TensorSpec((None,) + (tuple(w_shape) if weighted else ()), tf.float32)]

    @tf.function(input_signature=specs)
    def sq_norm(xb, yb, wb):
        with tf.GradientTape() as tape:
            loss = call_loss(loss_fn, yb, model(xb, training=True), wb if weighted else None)
        grads = tape.gradient(loss, variables)
        return tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float64))) for g in grads if g is not None])
    cache[key] = sq_norm
    return sq_norm


def batch_gradient_sq_norms(model, loss_fn, x, y, sample_weight, batch_size: int, n_batches: int,
                            rng: np.random.Generator, progress=None) -> np.ndarray:
    """|g_B|² over all trainable weights for `n_batches` batches of `batch_size` drawn with replacement (so
    E|g_B|² = |G|² + tr(Σ)/B exactly), BN in training mode as in fit; the statistics are put back."""
    import tensorflow as tf
    from ..batchnorm import preserved_bn_state
    weighted = sample_weight is not None
    sq_norm = sq_norm_function(model, loss_fn, x.shape[1:], y, tuple(sample_weight.shape[1:]) if weighted else None)
    norms = []
    with preserved_bn_state(model):
        for _ in range(n_batches):
            idx = np.sort(rng.integers(0, len(x), batch_size))
            wb = tf.constant(sample_weight[idx], tf.float32) if weighted else tf.zeros((batch_size,))
            norms.append(float(sq_norm(tf.constant(x[idx], tf.float32), tf.constant(y[idx]), wb)))
            if progress:
                progress()
    return np.asarray(norms)


def noise(inputs, batch_size: int, seed: int, logits: bool, progress=None) -> tuple[dict, dict]:
    """B_simple from |g|² at two batch sizes (McCandlish et al. 2018, app. A), a 90 % bootstrap interval
    over the batches drawn, and the largest batch it suggests when resolved."""
    from ..gradient_noise import two_batch_noise_scale
    n = len(inputs.x_train)
    b_small = max(2, min(batch_size, n // (2 * BIG_FACTOR)))
    b_big = min(BIG_FACTOR * b_small, n // 2)
    if not inputs.model.trainable_variables:
        return {"b_simple": None, "interval": None, "resolved": False, "reason": "no trainable weights"}, {}
    if b_big <= b_small:
        return {"b_simple": None, "interval": None, "resolved": False,
                "reason": f"x_train has only {n} examples, too few for two batch sizes"}, {}
    loss_fn, loss_desc = model_loss(inputs, logits)
    rng = np.random.default_rng(seed)
    y = inputs.train.loss_y
    small = batch_gradient_sq_norms(inputs.model, loss_fn, inputs.x_train, y, inputs.sample_weight_train,
                                    b_small, SMALL_BATCHES, rng, progress)
    big = batch_gradient_sq_norms(inputs.model, loss_fn, inputs.x_train, y, inputs.sample_weight_train,
                                  b_big, BIG_BATCHES, rng, progress)
    est = two_batch_noise_scale(small, b_small, big, b_big)
    boot = []
    for _ in range(BOOTSTRAP):
        e = two_batch_noise_scale(rng.choice(small, len(small)), b_small, rng.choice(big, len(big)), b_big)
        # tr(Σ) ≤ 0: no measurable noise, B_simple ≈ 0; |G|² ≤ 0 with noise: B_simple beyond reach, ∞
        boot.append(0.0 if e.trace_sigma <= 0 else e.trace_sigma / e.grad_norm_sq if e.grad_norm_sq > 0 else np.inf)
    boot = np.sort(np.asarray(boot))            # inf where a resample left |G|² or tr(Σ) ≤ 0
    lo, hi = float(boot[int(0.05 * (len(boot) - 1))]), float(boot[int(math.ceil(0.95 * (len(boot) - 1)))])
    extra = {"b_small": b_small, "b_big": b_big, "small_sq_norms": small, "big_sq_norms": big,
             "grad_norm_sq": est.grad_norm_sq, "trace_sigma": est.trace_sigma, "loss": loss_desc}
    point = float(est.b_simple) if (est.grad_norm_sq > 0 and est.trace_sigma > 0) else None
    resolved = bool(point is not None and math.isfinite(hi) and lo > 0 and hi / lo < NOISE_RESOLVED_FACTOR)
    section = {"b_simple": point, "interval": [lo, hi if math.isfinite(hi) else None], "resolved": resolved,
               "b_small": b_small, "b_big": b_big, "batches": [SMALL_BATCHES, BIG_BATCHES], "loss": loss_desc,
               "suggested_max_batch": None, "trace_sigma_positive": bool(est.trace_sigma > 0)}
    if resolved:
        cap = min(point, n)
        section["suggested_max_batch"] = int(2 ** math.floor(math.log2(cap))) if cap >= 1 else 1
    return section, extra


# ---------------------------------------------------------------- per-timestep weights


def timestep(inputs, metric, out_test) -> dict | None:
    """The positive share, the balancing weight neg/pos, and what the weights the user gave do."""
    if inputs.task != "timestep":
        return None
    from ..imbalanced import positive_weight_for
    y = inputs.train.metric_y
    fraction = float(y.mean())
    weight = float(positive_weight_for(y))
    sw = inputs.sample_weight_train
    given = "none" if sw is None else ("per series (N,)" if sw.ndim == 1 else "per step (N, T)")
    share = None
    constant_per_series = None
    if sw is not None:
        full = np.broadcast_to(sw[:, None], y.shape) if sw.ndim == 1 else sw
        total = float(full.sum())
        share = float((full * y).sum() / total) if total > 0 else None
        constant_per_series = bool(sw.ndim == 1 or np.all(sw == sw[:, :1]))
    return {"positive_fraction": fraction, "balancing_positive_weight": weight, "weights_given": given,
            "positive_weight_share": share, "weights_constant_per_series": constant_per_series,
            "balanced": None if share is None else bool(abs(share - 0.5) <= BALANCED_SHARE_TOLERANCE),
            "pr_auc_test": metric.value(out_test, inputs.test.metric_y),
            "pr_auc_constant_predictor": float(inputs.test.metric_y.mean())}
