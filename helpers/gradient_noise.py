"""Mini-batch gradient noise on a model small enough to do exactly in NumPy:
softmax regression (multinomial logistic regression) on the flattened digits.

This module is the one home of the NumPy softmax regression (lessons 01 and 05):
its gradient (`output_error`), its per-example gradient norms and the gradient
noise scale (`simple_noise_scale`, tr(Σ) with the unbiased ÷(N−1) covariance).
helpers.scaling trains the same model in an "augmented" layout (bias as the last
row of W) and imports these functions.

Shapes: X (N, D) features, y (N,) integer labels, W (D, K), b (K,).
A parameter vector theta is W and b flattened: (D*K + K,).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .workbook.frameworks import tf  # first: sets TensorFlow's environment
from .batch_size import diverged, steps_per_epoch


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (classes), overflow-guarded; (N, K) or (L, N, K)."""
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def output_error(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dz of the cross-entropy for each example: softmax(z) − onehot(y), shape (N, K)."""
    d = softmax(logits)
    d[np.arange(len(y)), y] -= 1.0
    return d


@dataclass
class SoftmaxRegression:
    """W (D, K) and b (K,); float64 for exact gradient statistics."""
    W: np.ndarray
    b: np.ndarray

    @classmethod
    def init(cls, n_features: int, n_classes: int, rng: np.random.Generator, scale: float = 0.01):
        return cls(rng.normal(0.0, scale, (n_features, n_classes)), np.zeros(n_classes))

    @classmethod
    def from_augmented(cls, W_aug: np.ndarray) -> "SoftmaxRegression":
        """From the (D+1, K) layout of helpers.scaling (bias as the last row)."""
        W_aug = np.asarray(W_aug, dtype=np.float64)
        return cls(W_aug[:-1].copy(), W_aug[-1].copy())

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        return softmax(X @ self.W + self.b)

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy over the examples."""
        p = self.probabilities(X)
        return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))

    def per_example_gradients(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of each example's loss w.r.t. (W, b): (N, D*K + K)."""
        d = output_error(X @ self.W + self.b, y)                  # dL/dz = p - onehot(y)
        gW = (X[:, :, None] * d[:, None, :]).reshape(len(X), -1)  # outer product x_i d_i^T
        return np.concatenate([gW, d], axis=1)

    def per_example_sq_norms(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|g_i|^2 of each example's gradient without forming it: (|x_i|^2 + 1)·|d_i|^2, shape (N,)."""
        d = output_error(X @ self.W + self.b, y)
        return (np.sum(X ** 2, axis=1) + 1.0) * np.sum(d ** 2, axis=1)

    def gradient(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mean gradient over the examples: (D*K + K,)."""
        d = output_error(X @ self.W + self.b, y)
        return np.concatenate([(X.T @ d).ravel(), d.sum(axis=0)]) / len(X)

    def step(self, grad: np.ndarray, learning_rate: float) -> None:
        D, K = self.W.shape
        self.W -= learning_rate * grad[:D * K].reshape(D, K)
        self.b -= learning_rate * grad[D * K:]

    def copy(self) -> "SoftmaxRegression":
        return SoftmaxRegression(self.W.copy(), self.b.copy())


def full_batch_descent(model: SoftmaxRegression, X, y, steps: int, learning_rate: float) -> list[float]:
    """`steps` full-batch gradient steps in place; returns the loss before each step and after the last."""
    losses = [model.loss(X, y)]
    for _ in range(steps):
        model.step(model.gradient(X, y), learning_rate)
        losses.append(model.loss(X, y))
    return losses


def simple_noise_scale(model: SoftmaxRegression, X, y) -> dict:
    """McCandlish et al.'s simple noise scale B_simple = tr(Σ) / |G|^2 at the model's weights, exactly.

    G is the full-data mean gradient; tr(Σ) = Σ_i |g_i − G|^2 / (N − 1), the trace of the
    per-example gradient covariance (unbiased, the S^2 of the without-replacement variance
    formula Var(g_B) = tr(Σ)/B · (N − B)/N). Returns {"b_simple", "trace_cov", "grad_norm_sq"}.
    """
    n = len(X)
    G = model.gradient(X, y)
    g2 = float(G @ G)
    trace = float((np.sum(model.per_example_sq_norms(X, y)) - n * g2) / (n - 1))
    return {"b_simple": trace / g2, "trace_cov": trace, "grad_norm_sq": g2}


@dataclass
class GradientNoise:
    """Mini-batch gradient noise measured at one parameter point.

    batch_sizes (S,); variance (S,): mean over batches of |g_B - G|^2;
    trace_sigma: tr(Σ) of the per-example gradients (divided by N - 1);
    grad_norm_sq: |G|^2 of the full gradient; n: examples.
    """
    batch_sizes: np.ndarray
    variance: np.ndarray
    variance_stderr: np.ndarray
    trace_sigma: float
    grad_norm_sq: float
    n: int

    def theory(self, batch_sizes) -> np.ndarray:
        """Variance of a mean of B draws without replacement: tr(Σ)/B · (N−B)/N."""
        b = np.asarray(batch_sizes, dtype=float)
        return self.trace_sigma / b * (self.n - b) / self.n

    @property
    def loglog_slope(self) -> float:
        """Least-squares slope of log(variance) against log(B): −1 means variance ∝ 1/B."""
        return float(np.polyfit(np.log(self.batch_sizes), np.log(self.variance), 1)[0])

    @property
    def noise_scale(self) -> float:
        """McCandlish et al.'s simple noise scale B_simple = tr(Σ) / |G|^2, in examples."""
        return self.trace_sigma / self.grad_norm_sq



def measure_gradient_noise(model: SoftmaxRegression, X, y, batch_sizes, batches_per_size: int,
                           rng: np.random.Generator) -> GradientNoise:
    """Draw `batches_per_size` mini-batches (without replacement) per size and measure |g_B − G|²."""
    per_example = model.per_example_gradients(X, y)           # (N, P)
    full = per_example.mean(axis=0)
    n = len(X)
    exact = simple_noise_scale(model, X, y)
    variances, stderrs = [], []
    for b in batch_sizes:
        dev = np.empty(batches_per_size)
        for i in range(batches_per_size):
            idx = rng.choice(n, size=b, replace=False)
            dev[i] = float(((per_example[idx].mean(axis=0) - full) ** 2).sum())
        variances.append(dev.mean())
        stderrs.append(dev.std(ddof=1) / math.sqrt(batches_per_size))
    return GradientNoise(np.asarray(batch_sizes), np.asarray(variances), np.asarray(stderrs),
                         exact["trace_cov"], exact["grad_norm_sq"], n)


def sgd_loss_curve(model: SoftmaxRegression, X, y, batch_size: int, learning_rate: float, epochs: int,
                   rng: np.random.Generator, evals_per_epoch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Mini-batch SGD in place; full training loss at `evals_per_epoch` points per epoch.

    Returns (epochs_done (E,), loss (E,)), starting with the loss at epoch 0.
    """
    n = len(X)
    steps = steps_per_epoch(n, batch_size)
    eval_at = set(np.linspace(0, steps, evals_per_epoch + 1).astype(int)[1:])
    xs, losses = [0.0], [model.loss(X, y)]
    for epoch in range(epochs):
        order = rng.permutation(n)
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            model.step(model.gradient(X[idx], y[idx]), learning_rate)
            if s + 1 in eval_at:
                loss = model.loss(X, y)
                xs.append(epoch + (s + 1) / steps)
                losses.append(loss if np.isfinite(loss) else np.nan)
    return np.asarray(xs), np.asarray(losses)


def loss_curve_grid(X, y, batch_sizes, learning_rates, epochs: int, seed: int,
                    evals_per_epoch: int = 4) -> dict:
    """SGD loss curves of softmax regression for every (batch size, learning rate).

    Every run starts from the same initial weights (drawn from `seed`).
    Returns {(B, lr): (epochs_done (E,), loss (E,))}.
    """
    from tqdm.auto import tqdm
    init = SoftmaxRegression.init(X.shape[1], int(y.max()) + 1, np.random.default_rng(seed))
    grid = {}
    pairs = [(b, lr) for b in batch_sizes for lr in learning_rates]
    for b, lr in tqdm(pairs, desc="SGD grid (NumPy)", unit="run"):
        with np.errstate(over="ignore", invalid="ignore"):
            grid[(b, lr)] = sgd_loss_curve(init.copy(), X, y, b, lr, epochs,
                                           np.random.default_rng(seed + 1), evals_per_epoch)
    return grid


def tf_gradient(model: SoftmaxRegression, X, y) -> np.ndarray:
    """The same mean gradient computed by TensorFlow autodiff, for cross-checking (D*K + K,)."""
    W = tf.Variable(model.W)
    b = tf.Variable(model.b)
    with tf.GradientTape() as tape:
        logits = tf.constant(X) @ W + b
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), logits))
    gW, gb = tape.gradient(loss, [W, b])
    return np.concatenate([gW.numpy().ravel(), gb.numpy()])


@dataclass(frozen=True)
class TwoBatchNoiseScale:
    """McCandlish et al. (2018), appendix A: the noise scale from two batch sizes only."""
    grad_norm_sq: float   # unbiased estimate of |G|^2
    trace_sigma: float    # unbiased estimate of tr(Σ), per example
    b_small: int
    b_big: int

    @property
    def b_simple(self) -> float:
        """tr(Σ) / |G|^2 in examples; inf where the |G|^2 estimate is not positive (noise dominates)."""
        return self.trace_sigma / self.grad_norm_sq if self.grad_norm_sq > 0 else math.inf


def two_batch_noise_scale(small_sq_norms, b_small: int, big_sq_norms, b_big: int) -> TwoBatchNoiseScale:
    """B_simple from squared norms of mini-batch gradients at two batch sizes, no full gradient needed.

    small_sq_norms, big_sq_norms: |g_B|^2 for several independent batches of size b_small and
    b_big (1-D arrays, or single floats). With E|g_B|^2 = |G|^2 + tr(Σ)/B, the two means give
        |G|^2  ≈ (b_big·|g_big|^2 − b_small·|g_small|^2) / (b_big − b_small)
        tr(Σ)  ≈ (|g_small|^2 − |g_big|^2) / (1/b_small − 1/b_big)
    (each unbiased; their ratio is not, so average many batches before dividing).
    This is how a user with a big model estimates it: only gradients they already compute.
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small}, {b_big}")
    small = float(np.mean(small_sq_norms))
    big = float(np.mean(big_sq_norms))
    g_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return TwoBatchNoiseScale(grad_norm_sq=g_sq, trace_sigma=trace, b_small=int(b_small), b_big=int(b_big))


def minibatch_sq_norms(model: SoftmaxRegression, X, y, batch_size: int, batches: int,
                       rng: np.random.Generator) -> np.ndarray:
    """|g_B|^2 of `batches` mini-batch gradients of `batch_size` examples drawn with replacement, (batches,).

    With replacement, as from a stream of fresh data: E|g_B|^2 = |G|^2 + tr(Σ)/B exactly
    (up to the ÷N vs ÷(N−1) of tr(Σ)), which is what two_batch_noise_scale assumes.
    Only mini-batch gradients are computed, never the full one.
    """
    out = np.empty(batches)
    for i in range(batches):
        idx = rng.integers(0, len(X), batch_size)
        g = model.gradient(X[idx], y[idx])
        out[i] = float(g @ g)
    return out


@dataclass(frozen=True)
class StepsToTarget:
    """One SGD run of softmax regression stopped at a target training loss.

    steps: optimizer steps until the full training loss first fell to the target (None: not within
    max_steps, stopped by pruning, or diverged); test_accuracy: on the test set at that moment (None if
    never); stopped_at: where a run that did not diverge was stopped short of the target (None: it
    reached the target, or it diverged).
    """
    batch_size: int
    learning_rate: float
    seed: int
    steps: int | None
    test_accuracy: float | None
    stopped_at: int | None = None      # stopped there short of the target: pruned, or max_steps


def steps_to_target_sweep(X, y, X_test, y_test, *, batch_sizes, learning_rates, seeds, target: float,
                          max_steps: int = 3000, prune: bool = True, desc: str = "steps to target (NumPy)",
                          progress: bool = True) -> dict:
    """Plain mini-batch SGD on softmax regression for every (batch size, rate, seed), each run stopped
    when its full training loss first reaches `target`; the loss is evaluated after every step, so
    steps are resolved to one.

    Seed s draws the initial weights (SoftmaxRegression.init) and the order of the examples (a fresh
    permutation per epoch, cut into ceil(N/B) batches, the last one partial); every rate of a seed sees
    the same weights and batches (common random numbers, so rates are compared on equal terms). The
    runs of one batch size are stacked and stepped together (plumbing for speed: the arithmetic is the
    per-run step of SoftmaxRegression, in float32). A run has diverged when its loss is not finite or
    climbs above 4 times its starting loss (a small batch's first steps may raise it a little).
    With `prune`, once some rate and the next rate up the grid have both reached the target on every
    seed by step m (so the first qualifies for tuned_rates), the rates that have not reached it on
    more than half the seeds are stopped there: their median is above m, so none of them can be the
    tuned rate (their runs report steps None, stopped_at m).
    Returns {(B, lr, seed): StepsToTarget}.
    """
    from tqdm.auto import tqdm
    X, X_test = np.asarray(X, np.float32), np.asarray(X_test, np.float32)
    seeds = list(seeds)
    n, d = X.shape
    k = int(max(y.max(), y_test.max())) + 1
    rows = np.arange(n)
    out = {}
    for b in tqdm(list(batch_sizes), desc=desc, unit="batch size", disable=not progress):
        pairs = [(lr, s) for s in seeds for lr in learning_rates]
        inits = {s: SoftmaxRegression.init(d, k, np.random.default_rng(s)) for s in seeds}
        W = np.stack([inits[s].W for _, s in pairs]).astype(np.float32)      # (L, D, K)
        bias = np.stack([inits[s].b for _, s in pairs]).astype(np.float32)   # (L, K)
        lr = np.array([r for r, _ in pairs], np.float32)[:, None, None]
        seed_of = np.array([seeds.index(s) for _, s in pairs])
        reached = {r: 0 for r in learning_rates}
        p0 = softmax(np.einsum("nd,ldk->lnk", X, W) + bias[:, None, :])
        start_loss = -np.mean(np.log(p0[:, rows, y] + 1e-12), axis=1)     # a run above 4× it has diverged
        rngs = [np.random.default_rng(s) for s in seeds]
        active = np.ones(len(pairs), bool)
        spe = steps_per_epoch(n, b)
        orders = None
        for step in range(max_steps):
            if step % spe == 0:
                orders = np.stack([g.permutation(n) for g in rngs])     # (S, N): one permutation per seed
            idx = orders[:, (step % spe) * b:(step % spe + 1) * b]     # (S, B') this step's batch per seed
            live = np.flatnonzero(active)
            xb = X[idx[seed_of[live]]]                                  # (L', B', D)
            err = softmax(np.einsum("lbd,ldk->lbk", xb, W[live]) + bias[live][:, None, :])
            err[np.arange(len(live))[:, None], np.arange(idx.shape[1])[None, :], y[idx[seed_of[live]]]] -= 1.0
            W[live] -= lr[live] * np.einsum("lbd,lbk->ldk", xb, err) / idx.shape[1]
            bias[live] -= lr[live][:, :, 0] * err.mean(axis=1)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                p = softmax(np.einsum("nd,ldk->lnk", X, W[live]) + bias[live][:, None, :])
                loss = -np.mean(np.log(p[:, rows, y] + 1e-12), axis=1)
            for j, l in enumerate(live):
                lr_l, s = pairs[l]
                if not np.isfinite(loss[j]) or loss[j] > 4 * start_loss[l]:
                    out[(b, lr_l, s)] = StepsToTarget(b, lr_l, s, None, None)
                    active[l] = False
                elif loss[j] <= target:
                    acc = float(np.mean(np.argmax(X_test @ W[l] + bias[l], axis=1) == y_test))
                    out[(b, lr_l, s)] = StepsToTarget(b, lr_l, s, step + 1, acc)
                    active[l] = False
                    reached[lr_l] += 1
            grid = sorted(learning_rates)
            if prune and any(reached[r] == reached[up] == len(seeds) for r, up in zip(grid, grid[1:])):
                for l in np.flatnonzero(active):
                    lr_l, s = pairs[l]
                    if 2 * reached[lr_l] <= len(seeds):       # this rate's median is beyond this step
                        out[(b, lr_l, s)] = StepsToTarget(b, lr_l, s, None, None, stopped_at=step + 1)
                        active[l] = False
            if not active.any():
                break
        for l in np.flatnonzero(active):
            lr_l, s = pairs[l]
            out[(b, lr_l, s)] = StepsToTarget(b, lr_l, s, None, None, stopped_at=max_steps)
    return out


def median_steps(runs: dict, batch_size: int, learning_rate: float, seeds) -> float:
    """Median over seeds of the steps to the target, a run that never got there counting as infinite."""
    return float(np.median([runs[(batch_size, learning_rate, s)].steps or np.inf for s in seeds]))


def tuned_rates(runs: dict, batch_sizes, learning_rates, seeds) -> dict:
    """{B: the rate with the fewest median steps to the target over `seeds`} (ties: the smaller rate), among
    the rates a user can rely on: the rate reaches the target on every seed, and the next rate up the grid
    diverges on none (a margin of one grid step from the edge where runs blow up; the fastest rates sit
    right at it and fail on fresh seeds). B is missing when no rate qualifies."""
    rates = sorted(learning_rates)
    out = {}
    for b in batch_sizes:
        sure = [r for r, up in zip(rates, rates[1:])
                if all(runs[(b, r, s)].steps for s in seeds) and not any(diverged(runs[(b, up, s)]) for s in seeds)]
        if sure:
            out[b] = min(sure, key=lambda r: (median_steps(runs, b, r, seeds), r))
    return out


def fit_steps_model(batch_sizes, steps) -> dict:
    """Fit S = S_min·(1 + B_crit/B) (McCandlish et al.'s form) to measured steps, in log space: steps
    spread over two decades, and a fit of S itself would be ruled by the smallest batches. For each B_crit
    on a fine log grid the best S_min is closed-form (the mean of log S − log(1 + B_crit/B)); the pair with
    the least squared log error wins. Returns {"s_min", "b_crit"}."""
    b = np.asarray(batch_sizes, float)
    log_s = np.log(np.asarray(steps, float))
    best = None
    for b_crit in np.geomspace(1e-2, 1e6, 4001):
        shape = np.log1p(b_crit / b)
        log_s_min = float(np.mean(log_s - shape))
        err = float(np.sum((log_s - log_s_min - shape) ** 2))
        if best is None or err < best[0]:
            best = (err, float(np.exp(log_s_min)), float(b_crit))
    return {"s_min": best[1], "b_crit": best[2]}


def steps_at_rates(X, y, X_test, y_test, *, rates: dict, seeds, target: float, max_steps: int = 3000) -> dict:
    """steps_to_target_sweep at one rate per batch size ({B: rate}), without pruning: the tuned rates
    measured again, e.g. on fresh seeds. Returns {(B, rate, seed): StepsToTarget}."""
    from tqdm.auto import tqdm
    out = {}
    for b, r in tqdm(list(rates.items()), desc="tuned rates, fresh seeds", unit="batch size"):
        out.update(steps_to_target_sweep(X, y, X_test, y_test, batch_sizes=[b], learning_rates=[r], seeds=seeds,
                                         target=target, max_steps=max_steps, prune=False, desc=f"B={b}",
                                         progress=False))
    return out


def at_tuned_rates(runs: dict, rates: dict, seeds) -> dict:
    """Per batch size, the runs at its tuned rate ({B: rate}): {B: {"steps": [steps or None per seed],
    "acc": [test accuracy of every run that reached the target]}}. Works for StepsToTarget and TargetRun."""
    return {b: dict(steps=[runs[(b, r, s)].steps for s in seeds],
                    acc=[runs[(b, r, s)].test_accuracy for s in seeds if runs[(b, r, s)].steps]) for b, r in rates.items()}


def grid_reaches_divergence(runs: dict, batch_size: int, rates, seeds) -> bool:
    """Whether some rate of the grid diverged on some seed at this batch size (steps None and not stopped short,
    as StepsToTarget and TargetRun record it): the grid reaches past the edge, so it brackets the tuned rate."""
    return any(diverged(runs[(batch_size, r, s)]) for r in rates for s in seeds)


def plot_gradient_noise(noise: GradientNoise, batches_per_size: int, finding: str) -> None:
    """Lesson 01, section 3: the measured E|g_B − G|² (±2 standard errors) against batch size, log-log, over the
    theory tr(Σ)/B·(N−B)/N; `finding` is the title."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding)
    b_grid = np.geomspace(min(noise.batch_sizes), max(noise.batch_sizes), 100)
    ax.plot(b_grid, noise.theory(b_grid), color="0.5", label="theory: tr(Σ)/B · (N−B)/N")
    ax.errorbar(noise.batch_sizes, noise.variance, yerr=2 * noise.variance_stderr, fmt="o", color="C3",
                label=f"measured, {batches_per_size} batches per size (±2 s.e.)")
    ax.set(xscale="log", yscale="log", xlabel="batch size B (examples)", ylabel="E|g_B − G|²")
    ax.legend()
    plt.show()
