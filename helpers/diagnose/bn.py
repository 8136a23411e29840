"""The BN check: what each layer applies with its stored statistics against the exact statistics of the
training data ("precise BN", helpers.batchnorm), which layers are off and which one matters most, and
whether recomputing helps the held-out metric beyond its noise.

Precise statistics take one pass (subsample_statistics) instead of one per BN layer; the layer-by-layer
work is kept for localisation, on the off layers only. Non-trainable ("frozen") BN layers keep their
statistics: they are part of the model, as in fit.
"""
from __future__ import annotations

import math

import numpy as np

from .codes import (APPLIED_TOLERANCE, CHANNEL_QUANTILE, IMPROVEMENT_SE, INPUT_SCALE_RATIO, STATISTICS_BUDGET_BYTES,
                    STATISTICS_SUBSAMPLE_MAX, INPUT_SCALE_FIT, INPUT_SCALE_OFF, SMALL_BATCH_MAX_RATIO,
                    SMALL_BATCH_RATIO_TOLERANCE)
from .metrics import forward

LOCALISE_AT_MOST = 8     # layers the one-layer-at-a-time pass scores (the most off first)


def applied_errors(stored: tuple, exact: tuple, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: |ln(divisor_stored / divisor_exact)| and |mean_stored − mean_exact| / divisor_exact, where
    divisor = sqrt(var + eps) is what the layer divides by. A channel of near-zero variance is divided by
    ~sqrt(eps) either way, so it counts as right however far its stored variance is, relatively."""
    (ms, vs), (me, ve) = [(np.asarray(m, np.float64), np.asarray(v, np.float64)) for m, v in (stored, exact)]
    ds, de = np.sqrt(np.maximum(vs, 0) + eps), np.sqrt(np.maximum(ve, 0) + eps)
    return np.abs(np.log(ds / de)), np.abs(ms - me) / de


def layer_row(layer, stored: tuple, exact: tuple, batch_size: int, threshold: float = APPLIED_TOLERANCE) -> dict:
    eps = float(layer.epsilon)
    scale, shift = applied_errors(stored, exact, eps)
    err = np.maximum(scale, shift)
    q = CHANNEL_QUANTILE
    live = np.asarray(exact[1]) > 10 * eps
    ratio = (np.asarray(stored[1], np.float64)[live] / np.asarray(exact[1], np.float64)[live]) if live.any() else np.array([])
    try:
        positions = int(np.prod([d for d in layer.input.shape[1:-1]])) if len(layer.input.shape) > 2 else 1
    except Exception:  # noqa: BLE001 — a layer inside a nested model may have no single input shape
        positions = None
    return {"name": layer.name, "trainable": bool(layer.trainable), "channels": int(len(err)),
            "momentum": float(layer.momentum),
            "live_channels": int(live.sum()),
            "error_median": float(np.median(err)), "error_p90": float(np.quantile(err, q)), "error_max": float(err.max()),
            "scale_error_p90": float(np.quantile(scale, q)), "mean_shift_p90": float(np.quantile(shift, q)),
            "mean_shift_median": float(np.median(shift)),
            "variance_ratio_median": float(np.median(ratio)) if len(ratio) else None,
            "variance_ratio_p10": float(np.quantile(ratio, 0.1)) if len(ratio) else None,
            "variance_ratio_p90": float(np.quantile(ratio, 0.9)) if len(ratio) else None,
            "values_per_channel_per_batch": None if positions is None else int(batch_size * positions),
            "off": bool(layer.trainable and np.quantile(err, q) > threshold)}


def small_batch_bias(row: dict) -> dict | None:
    """The signature of Keras's biased per-batch variance: the median over channels of stored/exact variance
    near (m−1)/m < 1 for the m values per channel in a training batch, with the means right (median shift
    small). A high BN momentum makes every channel's ratio close to the median; a low one leaves each
    channel noisy, which is why medians decide. When m is unknown the ratios must also be tight.
    Returns {m_estimated, m_expected, ratio, ratio_expected} or None."""
    med, lo, hi = row["variance_ratio_median"], row["variance_ratio_p10"], row["variance_ratio_p90"]
    m = row["values_per_channel_per_batch"]
    # the moving mean averages ~(1+μ)/(1−μ) batch means of m values: its own noise, in σ, is
    # sqrt((1−μ)/((1+μ)·m)); the median of |shift| of a normal with that sd is 0.674 of it
    noise = math.sqrt((1 - row["momentum"]) / ((1 + row["momentum"]) * m)) if m else 0.0
    if med is None or not (0.3 < med < SMALL_BATCH_MAX_RATIO) \
            or row["mean_shift_median"] > max(APPLIED_TOLERANCE, 2 * 0.674 * noise):
        return None
    expected = None if not m else (m - 1) / m
    if expected is None and hi - lo > 4 * SMALL_BATCH_RATIO_TOLERANCE:
        return None
    if expected is not None and abs(med - expected) > SMALL_BATCH_RATIO_TOLERANCE:
        return None
    return {"m_estimated": 1.0 / (1.0 - med), "m_expected": m, "ratio": med, "ratio_expected": expected}


def subsample_statistics(model, layers, x: np.ndarray, seed: int, include_frozen: bool = False):
    """Precise BN statistics in ONE pass: a random subsample of x (all of x when it fits) goes through the
    network as one batch with every trainable BN layer normalizing with that batch's own moments
    (training-mode BN; dropout and everything else in inference mode, frozen BN layers as stored). Each layer
    thus sees its input with the layers before it already normalized with their exact statistics, which is
    what precise BN computes layer by layer in as many passes as there are BN layers. The subsample is as
    large as STATISTICS_BUDGET_BYTES of BN inputs allows (64 to STATISTICS_SUBSAMPLE_MAX examples).
    Returns [(mean, unbiased var)] per layer and the subsample's size."""
    import keras
    from ..batchnorm import LayerTap, batch_statistics, preserved_bn_state
    with LayerTap(layers, "input") as tap:
        model(x[:2], training=False)
    per_example = sum(int(np.prod(tap.values(l).shape[1:])) for l in layers) * 4 * 3
    size = int(min(len(x), STATISTICS_SUBSAMPLE_MAX, max(64, STATISTICS_BUDGET_BYTES // max(per_example, 1))))
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False)) if size < len(x) else slice(None)
    patched = [l for l in layers if l.trainable or include_frozen]
    with preserved_bn_state(model), LayerTap(layers, "input") as tap:
        for layer in patched:                 # this layer in training mode, whatever the call says
            original = layer.call

            def call(inputs, *args, _original=original, _layer=layer, **kwargs):
                kwargs["training"] = True
                if not _layer.trainable:      # Keras runs a frozen BN layer in inference mode whatever it is told
                    tap.seen[id(_layer)].append(np.asarray(inputs))
                    mean, var = (keras.ops.convert_to_tensor(v, "float32") for v in
                                 batch_statistics(np.asarray(inputs)))
                    return keras.ops.batch_normalization(inputs, mean, var, axis=-1, offset=_layer.beta,
                                                         scale=_layer.gamma, epsilon=_layer.epsilon)
                return _original(inputs, *args, **kwargs)
            object.__setattr__(layer, "call", call)
        try:
            model(x[idx], training=False)
        finally:
            for layer in patched:
                object.__delattr__(layer, "call")
    return [batch_statistics(tap.values(l), unbiased=True) for l in layers], size


def exact_statistics(model, layers, x: np.ndarray, batch_size: int = 512, seed: int = 0):
    """(precise, local, passes, resolution, subsample). precise: subsample_statistics, frozen layers as stored.
    local: each layer's input statistics over all of x with the stored statistics before it (one chunked pass;
    only when some layer is frozen, whose row compares its kept statistics with that, else None).
    resolution: when the subsample is not all of x, the largest 90th percentile over channels of the error (as
    in applied_errors) between the subsample's statistics and all of x's, with the subsample's statistics
    assigned before each layer (one more chunked pass); 0 when the subsample is x."""
    from ..batchnorm import assign_moving_statistics, moving_statistics, population_statistics, preserved_bn_state
    stored = moving_statistics(model)
    trainable = [bool(l.trainable) for l in layers]
    # frozen layers only: their input over all of x with the stored statistics before them (one chunked pass)
    local = population_statistics(model, x, batch_size=batch_size, compiled=True) if not all(trainable) else None
    start, size = subsample_statistics(model, layers, x, seed)
    precise = [s if t else st for s, t, st in zip(start, trainable, stored)]
    passes, resolution = 2, 0.0
    if size < len(x):
        with preserved_bn_state(model):
            assign_moving_statistics(model, precise)
            full = population_statistics(model, x, batch_size=batch_size, compiled=True)
        passes += 1
        resolution = max([float(np.quantile(np.maximum(*applied_errors(p, f, float(l.epsilon))), CHANNEL_QUANTILE))
                          for p, f, l, t in zip(precise, full, layers, trainable) if t] or [0.0])
    return precise, local, passes, resolution, size


def first_layer_scale(model, layer, x_raw: np.ndarray, stored: tuple, seed: int) -> dict:
    """How far the first BN layer's stored statistics are from its input's as the data is given, and
    under standard rescalings of x (the one that fits best is named)."""
    from ..batchnorm import batch_statistics, population_statistics
    rng = np.random.default_rng(seed)
    x = x_raw if len(x_raw) <= 1024 else x_raw[np.sort(rng.choice(len(x_raw), 1024, replace=False))]
    x = x.astype(np.float32)
    lo, hi = float(np.min(x)), float(np.max(x))
    candidates = {"as given": x}
    if hi > 2.0 and lo >= -1e-6:
        candidates.update({"x / 255": x / 255.0, "x / 127.5 − 1": x / 127.5 - 1.0})
    elif lo >= -1e-6 and hi <= 1.0 + 1e-6:
        candidates.update({"x × 255": x * 255.0, "2x − 1": 2.0 * x - 1.0})
    elif lo >= -1.0 - 1e-6 and hi <= 1.0 + 1e-6:
        candidates.update({"(x + 1) / 2": (x + 1.0) / 2.0, "(x + 1) × 127.5": (x + 1.0) * 127.5})
    eps = float(layer.epsilon)
    try:                      # the layers up to the first BN layer only (cheap), else the whole network
        import keras
        stem = keras.Model(model.inputs[0], layer.input)
        first = lambda xv: batch_statistics(np.asarray(stem(xv, training=False)), unbiased=True)  # noqa: E731
    except Exception:  # noqa: BLE001 — nested models, subclassed models
        first = lambda xv: population_statistics(model, xv, batch_size=256)[0]  # noqa: E731
    errors = {}
    for name, xv in candidates.items():
        stats = first(xv)
        scale, shift = applied_errors(stored, stats, eps)
        errors[name] = float(np.median(np.maximum(scale, np.minimum(shift, 50.0))))
    best = min(errors, key=errors.get)
    found = bool(best != "as given" and errors[best] < INPUT_SCALE_FIT
                 and errors["as given"] > max(INPUT_SCALE_OFF, INPUT_SCALE_RATIO * errors[best]))
    return {"layer": layer.name, "error_as_given": errors["as given"], "errors": errors,
            "best_rescaling": best if found else None, "mismatch": found}


def analyse(inputs, metric, *, batch_size: int, seed: int) -> dict | None:
    """The bn_statistics section (None without BN layers) plus, under "_precise", the statistics to assign."""
    from ..batchnorm import assign_moving_statistics, bn_layers, moving_statistics, preserved_bn_state
    model = inputs.model
    layers = bn_layers(model)
    if not layers:
        return None
    stored = moving_statistics(model)
    precise, local, passes, resolution, subsample = exact_statistics(model, layers, inputs.x_train, seed=seed)
    threshold = max(APPLIED_TOLERANCE, 2 * resolution)     # never closer than twice the statistics' resolution
    # a frozen layer keeps its statistics: its row compares them with its input as the model runs (local)
    rows = [layer_row(l, s, p if l.trainable else lo, batch_size, threshold)
            for l, s, p, lo in zip(layers, stored, precise, local or precise)]
    y = inputs.test.metric_y
    out_stored = forward(model, inputs.x_test)
    trainable = [bool(l.trainable) for l in layers]
    with preserved_bn_state(model):
        assign_moving_statistics(model, precise)       # frozen layers: precise holds their stored statistics
        out_recomputed = forward(model, inputs.x_test)
    change, se = metric.paired(out_stored, out_recomputed, y, seed=seed)
    improves = bool(change > IMPROVEMENT_SE * se and metric.meaningful(change, metric.value(out_stored, y)))
    worsens = bool(change < 0 and -change > IMPROVEMENT_SE * se)
    off = [r["name"] for r in rows if r["off"]]
    # localisation: recompute one off layer at a time (the most off first) and score the held-out metric
    by_error = sorted((r for r in rows if r["off"]), key=lambda r: -r["error_p90"])[:LOCALISE_AT_MOST]
    index = {l.name: k for k, l in enumerate(layers)}
    single = {}
    for r in by_error:
        k = index[r["name"]]
        with preserved_bn_state(model):
            layers[k].moving_mean.assign(np.asarray(precise[k][0], np.float32))
            layers[k].moving_variance.assign(np.asarray(precise[k][1], np.float32))
            out_k = forward(model, inputs.x_test)
        c, s = metric.paired(out_stored, out_k, y, seed=seed)
        single[r["name"]] = {"change": c, "se": s}
    moving = {n: v for n, v in single.items() if v["change"] > IMPROVEMENT_SE * v["se"] and v["change"] > 0}
    # (a single layer's gain needs no minimum size to name the culprit)
    if moving:
        worst = max(moving, key=lambda n: moving[n]["change"])
        how = "recomputing this layer alone improves the held-out metric the most"
    elif off:
        worst = by_error[0]["name"]
        how = "the largest error in what the layer applies (no single layer moves the metric beyond its noise)"
    else:
        worst, how = None, None
    bias = {r["name"]: b for r in rows if r["off"] for b in [small_batch_bias(r)] if b is not None}
    frozen_change = None
    if not all(trainable):            # what recomputing the frozen layers too would do (never advised)
        every, _ = subsample_statistics(model, layers, inputs.x_train, seed, include_frozen=True)
        with preserved_bn_state(model):
            assign_moving_statistics(model, every)
            out_every = forward(model, inputs.x_test)
        c, s_ = metric.paired(out_stored, out_every, y, seed=seed)
        frozen_change = {"metric": metric.value(out_every, y), "change": c, "se": s_}
    scale = first_layer_scale(model, layers[0], inputs.x_train, stored[0], seed)
    as_stored, recomputed = metric.value(out_stored, y), metric.value(out_recomputed, y)
    return {
        "layers_checked": len(layers), "frozen_layers": [l.name for l in layers if not l.trainable],
        "trainable_layers": sum(trainable), "recompute_frozen_too": frozen_change,
        "metric_as_stored": as_stored, "metric_recomputed": recomputed,
        "metric_change": change, "metric_change_se": se, "improves": improves, "worsens": worsens,
        "off_layers": off, "first_off_layer": off[0] if off else None, "worst_layer": worst,
        "worst_layer_rule": how, "single_layer_changes": single, "small_batch_bias": bias,
        "input_scale": scale, "recompute_passes": passes, "recompute_subsample": subsample,
        "recompute_resolution": resolution, "off_threshold": threshold,
        "layers": rows, "_precise": precise, "_out_stored": out_stored, "_out_recomputed": out_recomputed,
    }
