"""How far does a bigger global batch help? (lesson 05, sections 8-10)

Softmax regression on flat digits, trained with plain mini-batch SGD written in
NumPy: the model of helpers.gradient_noise (its one home: softmax, gradient,
noise scale), here in a layout that trains many learning rates at once, so
hundreds of runs take seconds and the steps-to-target sweep runs live in the notebook.

Shapes: x (N, 64) float, y (N,) int labels 0..9; weights W (65, 10) with the
bias as the last row (inputs are augmented with a constant 1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .workbook.frameworks import keras  # first: sets TensorFlow's environment
from .gradient_noise import SoftmaxRegression, output_error, simple_noise_scale, softmax  # noqa: F401 (softmax re-exported)

NUM_CLASSES = 10
RULES = ("fixed", "linear", "linear + warm-up", "sqrt")


def augment(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D+1) with a trailing column of ones (the bias input)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.hstack([x, np.ones((len(x), 1))])


def mean_gradient(W: np.ndarray, xa: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the mean cross-entropy over (xa (B, 65), y (B,)) w.r.t. W (65, 10)."""
    return xa.T @ output_error(xa @ W, y) / len(y)


def softmax_accuracy(W: np.ndarray, xa: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(xa @ W, axis=1) == y))


def gradient_noise_scale(W: np.ndarray, xa: np.ndarray, y: np.ndarray) -> dict:
    """B_simple = tr(Σ) / |G|² at weights W (65, 10): gradient_noise.simple_noise_scale, in this layout.

    xa must carry the bias column of ones last (see `augment`). Returns
    {"b_simple", "trace_cov", "grad_norm_sq"}, tr(Σ) with the unbiased ÷(N−1).
    """
    return simple_noise_scale(SoftmaxRegression.from_augmented(W), np.asarray(xa)[:, :-1], y)


def full_batch_weights(xa: np.ndarray, y: np.ndarray, steps: int = 50, learning_rate: float = 0.5) -> np.ndarray:
    """W (65, 10) after `steps` full-batch gradient steps from zero (where lesson 01 measures noise)."""
    W = np.zeros((xa.shape[1], NUM_CLASSES))
    for _ in range(steps):
        W -= learning_rate * mean_gradient(W, xa, y)
    return W


def steps_to_target(xa: np.ndarray, y: np.ndarray, xa_test: np.ndarray, y_test: np.ndarray, *, batch: int,
                    learning_rates: Sequence[float], target: float, max_steps: int, seed: int) -> list:
    """SGD from W = 0 at every learning rate at once (same batches for all rates).

    Epochs are i.i.d. shuffles drawn from `seed`, cut into batches of `batch`
    (last partial batch dropped). Returns, per learning rate, the first step
    count after which test accuracy >= target, or None within max_steps.
    """
    rng = np.random.default_rng(seed)
    lrs = np.asarray(learning_rates, float)[:, None, None]
    W = np.zeros((len(lrs), xa.shape[1], NUM_CLASSES))
    reached = [None] * len(lrs)
    n = len(y)
    per_epoch = max(n // batch, 1)
    rows = np.arange(batch)
    step = 0
    while step < max_steps:
        order = rng.permutation(n)
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            xb = xa[idx]
            p = softmax(xb @ W)
            p[:, rows[:len(idx)], y[idx]] -= 1.0
            W -= lrs * (xb.T @ p) / len(idx)
            step += 1
            acc = np.mean(np.argmax(xa_test @ W, axis=2) == y_test, axis=1)
            for j in np.flatnonzero(acc >= target):
                if reached[j] is None:
                    reached[j] = step
            if all(r is not None for r in reached) or step >= max_steps:
                return reached
    return reached


def batch_scaling_sweep(xa, y, xa_test, y_test, *, batches: Sequence[int], learning_rates: Sequence[float],
                          target: float, max_steps: int, seed: int, repeats: int = 3, near: float = 0.1,
                          progress: bool = True) -> list[dict]:
    """For each batch size, the median steps to target over `repeats` data orders at each rate; keeps the best.

    A data order that does not reach the target within max_steps counts as "not reached" (infinitely many
    steps), so the median is finite when more than half of the orders reach it: a rate that fails one order
    in three is not thrown away, and the criterion does not penalise high rates more than low ones.
    Returns one record per batch: batch; steps, the fewest median steps at any rate (None if no rate's median
    is finite); fastest_lr, the rate that gives them (ties: the smaller rate), a noisy pick where the steps
    hardly change with the rate; best_lr, the smallest rate within `near` (relative) of the fewest steps;
    interior, whether best_lr has a grid rate on each side: the grid reaches below it, and above it the steps
    stopped improving by more than `near` (else the grid may cut the optimum off); steps_by_lr {lr: median
    or None} and reached_by_lr {lr: how many orders reached the target}.
    """
    from tqdm.auto import tqdm
    rows = []
    rates = [float(r) for r in learning_rates]
    bar = tqdm(total=len(batches) * repeats, desc="steps-to-target sweep", disable=not progress)
    for b in batches:
        runs = []
        for r in range(repeats):
            runs.append(steps_to_target(xa, y, xa_test, y_test, batch=b, learning_rates=rates,
                                        target=target, max_steps=max_steps, seed=seed * 1000 + r))
            bar.update(1)
        by_lr, reached_by_lr = {}, {}
        for j, lr in enumerate(rates):
            got = np.array([np.inf if run[j] is None else run[j] for run in runs], float)
            median = float(np.median(got))
            by_lr[lr] = median if np.isfinite(median) else None
            reached_by_lr[lr] = int(np.isfinite(got).sum())
        finite = {lr: s for lr, s in by_lr.items() if s is not None}
        fastest = min(finite, key=lambda lr: (finite[lr], lr)) if finite else None
        fewest = finite.get(fastest) if fastest is not None else None
        best = min(lr for lr, s in finite.items() if s <= (1 + near) * fewest) if finite else None
        rows.append({"batch": b, "steps": fewest, "fastest_lr": fastest, "best_lr": best,
                     "interior": best is not None and min(rates) < best < max(rates),
                     "steps_by_lr": by_lr, "reached_by_lr": reached_by_lr})
    bar.close()
    return rows


def fit_critical_batch(batches: Sequence[float], steps: Sequence[float]) -> dict:
    """Fit S = S_min · (1 + B_noise / B) to measured (B, S) by least squares on relative error.

    S = a + c/B is linear in (a, c); rows are divided by S so every point weighs
    the same in relative terms. Returns {"s_min": a, "b_noise": c / a}.
    """
    B = np.asarray(batches, float)
    S = np.asarray(steps, float)
    A = np.stack([np.ones_like(B), 1.0 / B], axis=1) / S[:, None]
    (a, c), *_ = np.linalg.lstsq(A, np.ones_like(S), rcond=None)
    return {"s_min": float(a), "b_noise": float(c / a)}


def predicted_steps(batches: Sequence[float], s_min: float, b_noise: float) -> np.ndarray:
    """S(B) = S_min (1 + B_noise / B), shape like batches."""
    return s_min * (1.0 + b_noise / np.asarray(batches, float))


# --------------------------------------------------------------------------- learning-rate rules


def learning_rate_at(step: int, *, rule: str, replicas: int, base_lr: float, warmup_steps: int) -> float:
    """The learning rate at optimizer step `step` under a scaling rule.

    fixed: base_lr whatever the replicas; linear: replicas · base_lr (Goyal et al.);
    linear + warm-up: from base_lr to replicas · base_lr over warmup_steps, then flat;
    sqrt: sqrt(replicas) · base_lr.
    """
    if rule == "fixed":
        return base_lr
    if rule == "linear":
        return replicas * base_lr
    if rule == "linear + warm-up":
        peak = replicas * base_lr
        if warmup_steps <= 0 or step >= warmup_steps:
            return peak
        return base_lr + (peak - base_lr) * step / warmup_steps
    if rule == "sqrt":
        return float(np.sqrt(replicas)) * base_lr
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def train_with_rule(xa, y, xa_test, y_test, *, replicas: int, per_replica_batch: int, epochs: int,
                    base_lr: float, rule: str, warmup_epochs: int, seed: int) -> dict:
    """Softmax regression, SGD at global batch replicas · per_replica_batch for `epochs` epochs.

    (k replicas × b is one device × k·b, shown in section 1, so one process suffices.)
    Returns global_batch, steps_per_epoch, lr_per_epoch (rate at each epoch's first
    step), test_accuracy (per epoch).
    """
    rng = np.random.default_rng(seed)
    gb = replicas * per_replica_batch
    n = len(y)
    per_epoch = max(n // gb, 1)
    warmup_steps = warmup_epochs * per_epoch
    W = np.zeros((xa.shape[1], NUM_CLASSES))
    step, lrs, accs = 0, [], []
    for _ in range(epochs):
        order = rng.permutation(n)
        lrs.append(learning_rate_at(step, rule=rule, replicas=replicas, base_lr=base_lr, warmup_steps=warmup_steps))
        for i in range(per_epoch):
            idx = order[i * gb:(i + 1) * gb]
            lr = learning_rate_at(step, rule=rule, replicas=replicas, base_lr=base_lr, warmup_steps=warmup_steps)
            W -= lr * mean_gradient(W, xa[idx], y[idx])
            step += 1
        accs.append(softmax_accuracy(W, xa_test, y_test))
    return {"global_batch": gb, "steps_per_epoch": per_epoch, "lr_per_epoch": lrs, "test_accuracy": accs}


def rule_grid(xa, y, xa_test, y_test, *, replicas: Sequence[int], per_replica_batches: Sequence[int],
              rules: Sequence[str], epochs: int, base_lr: float, warmup_epochs: int, seed: int,
              progress: bool = True) -> dict:
    """train_with_rule for every (replicas, per_replica_batch, rule); {(k, b, rule): result}."""
    from tqdm.auto import tqdm
    combos = [(k, b, r) for k in replicas for b in per_replica_batches for r in rules]
    return {c: train_with_rule(xa, y, xa_test, y_test, replicas=c[0], per_replica_batch=c[1], epochs=epochs,
                               base_lr=base_lr, rule=c[2], warmup_epochs=warmup_epochs, seed=seed)
            for c in tqdm(combos, desc="learning-rate rules", disable=not progress)}


# --------------------------------------------------------------------------- what lesson 05 shows


def plot_steps_against_batch(reached: Sequence[dict], fit: dict, noise: dict, target: float):
    """Steps to `target` against the global batch (log-log): the sweep's rows that reached it
    (batch_scaling_sweep), perfect scaling from the smallest batch, the fitted S_min(1 + B_crit/B) (fit:
    fit_critical_batch) and the same curve at B_simple (noise: gradient_noise_scale). Returns (fig, ax)."""
    from .workbook.plotting import figure
    S = np.array([r["steps"] for r in reached], float)
    Bs = np.array([r["batch"] for r in reached], float)
    fig, ax = figure(finding=f"Steps stop halving near B_crit ≈ {fit['b_noise']:.0f}, far below B_simple ≈ {noise['b_simple']:.0f}")
    ax.plot(Bs, S, "o-", label="measured (best rate per batch)")
    ax.plot(Bs, S[0] * Bs[0] / Bs, ":", color="gray", label="perfect scaling")
    ax.plot(Bs, predicted_steps(Bs, fit["s_min"], fit["b_noise"]), "--", label=f"fit S_min(1 + B_crit/B), B_crit = {fit['b_noise']:.0f}")
    ax.plot(Bs, predicted_steps(Bs, fit["s_min"], noise["b_simple"]), "-.",
            label=f"S_min(1 + B_simple/B), B_simple = {noise['b_simple']:.0f}")
    ax.set(xscale="log", yscale="log", xlabel="global batch (samples)", ylabel=f"steps to {target:.0%} test accuracy")
    ax.legend()
    return fig, ax


#: the worked example's assumed constants: a ResNet-50-sized network (25.6 M float32 parameters), 0.3 s of compute
#: per step on one device, and two links (bytes per second)
ASSUMED_MODEL_BYTES, ASSUMED_COMPUTE_S = 25.6e6 * 4, 0.3
ASSUMED_LINKS = {"NVLink-class, 100 GB/s": 100e9, "10 GbE, 1.25 GB/s": 1.25e9}


def throughput_model_figure(speedup, devices: Sequence[int] = tuple(range(1, 65))):
    """Plot the modelled throughput speed-up against the device count k for weak and strong scaling over
    ASSUMED_LINKS (no overlap; weak also with 90 % of the all-reduce hidden) and return a Table of the speed-ups
    at the 2nd, 8th and last k, every combination. speedup(compute_s, n_bytes, k (K,), bandwidth, *, scaling,
    overlap) -> (K,): helpers.distributed.throughput_speedup. A worked example, not a measurement."""
    from .workbook.plotting import figure
    from .workbook.tables import Table
    k_axis = np.asarray(devices)
    fig, ax = figure(finding="Modelled throughput (assumed constants): weak scaling keeps growing, strong scaling saturates over 10 GbE")
    rows = []
    for (name, bandwidth), color in zip(ASSUMED_LINKS.items(), ("C0", "C3")):
        for kind, ls in (("weak", "-"), ("strong", "--")):
            for overlap in (0.0, 0.9):
                s = speedup(ASSUMED_COMPUTE_S, ASSUMED_MODEL_BYTES, k_axis, bandwidth, scaling=kind, overlap=overlap)
                if overlap == 0.0 or kind == "weak":
                    ax.plot(k_axis, s, ls=ls, color=color, alpha=1.0 if overlap == 0 else 0.5,
                            label=f"{name}, {kind}, overlap {overlap:.0%}")
                rows.append([name, kind, f"{overlap:.0%}", float(s[1]), float(s[7]), float(s[-1])])
    ax.plot(k_axis, k_axis, ls=":", color="gray", label="perfect")
    ax.set(xlabel="devices k", ylabel="throughput speed-up (× one device)", xscale="log", yscale="log")
    ax.legend(fontsize=6)
    return Table(["link", "scaling", "all-reduce hidden", f"speed-up at k={k_axis[1]}", f"k={k_axis[7]}", f"k={k_axis[-1]}"], rows)


def weights_after_steps(optimizer, grad_scale: float, xa: np.ndarray, y: np.ndarray, *, seed: int, steps: int = 50,
                        batch: int = 64) -> np.ndarray:
    """W (65, 10) of softmax regression after `steps` updates of a Keras optimizer from W = 0, each fed
    grad_scale × the mean gradient of a mini-batch of `batch` (one shuffle drawn from `seed`, wrapped around):
    grad_scale = k stands for k replicas' gradients summed instead of averaged."""
    W = keras.Variable(np.zeros((xa.shape[1], NUM_CLASSES), np.float32))
    order = np.random.default_rng(seed).permutation(len(y))
    for i in range(steps):
        idx = order[np.arange(i * batch, (i + 1) * batch) % len(order)]
        g = grad_scale * mean_gradient(np.asarray(W, np.float64), xa[idx], y[idx])
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g.astype(np.float32)), W)])
    return np.asarray(W, np.float64)
