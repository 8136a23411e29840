"""Steps, epochs and batch sizes: the arithmetic, a like-for-like comparison of
full-batch, mini-batch and single-example training, activation memory, and the driver of lesson 01's
compiled steps-to-target runs (`compiled_steps_to_target`, `tuned_rate_sweep`; the loop itself is
written on the page).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over n_examples: ceil(N / B) (the last batch may be partial)."""
    return math.ceil(n_examples / batch_size)


def last_batch_size(n_examples: int, batch_size: int) -> int:
    """Size of the last (possibly partial) batch of an epoch."""
    return n_examples - (steps_per_epoch(n_examples, batch_size) - 1) * batch_size


def epochs_for(steps: int, batch_size: int, n_examples: int) -> float:
    """How many passes over the data `steps` steps of `batch_size` examples make."""
    return steps * batch_size / n_examples


def activation_elements_per_example(model) -> int:
    """Sum over a Keras model's layers of each output's elements for one example.

    These are the activations kept for the backward pass (an upper-bound
    proxy: frameworks may free or recompute some).
    """
    total = 0
    for layer in model.layers:
        shape = layer.output.shape
        total += int(np.prod([d for d in shape[1:]]))
    return total


def activation_bytes(model, batch_size: int, bytes_per_element: int = 4) -> int:
    """Activation memory of one step's forward pass at `batch_size` (float32 by default)."""
    return activation_elements_per_example(model) * batch_size * bytes_per_element


def measured_activation_bytes(model, x: np.ndarray) -> int:
    """Bytes of every layer output actually produced by a forward pass on x (N, ...).

    Builds a model returning all intermediate outputs and sums their sizes:
    the tensors a backward pass keeps (before any framework-specific freeing).
    """
    import keras
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    tap = keras.Model(inputs, [layer.output for layer in model.layers])
    outs = tap(x, training=False)
    return int(sum(np.asarray(o).nbytes for o in outs))


@dataclass
class RegimeRun:
    """One training run logged at evaluation points.

    epochs, steps, seconds, loss: (E,) arrays, starting at the untrained model.
    seconds counts training time only (loss evaluation excluded).
    """
    batch_size: int
    learning_rate: float
    epochs: np.ndarray
    steps: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray

    @property
    def seconds_per_epoch(self) -> float:
        return float(self.seconds[-1] / self.epochs[-1])


def train_regime(model, x: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: float,
                 evals_per_epoch: int = 1, seed: int = 0, desc: str | None = None) -> RegimeRun:
    """Train a compiled Keras model with mini-batches of `batch_size` for `epochs` passes,
    evaluating the full-data loss `evals_per_epoch` times per pass.

    Works by cutting a repeated, reshuffled dataset into chunks of
    ceil(steps_per_epoch / evals_per_epoch) steps, so a batch-1 run can be
    logged several times within one pass. x (N, ...), y (N,).
    """
    import tensorflow as tf
    from .training import epoch_log, predict_proba, train
    import keras
    n = len(x)
    steps = steps_per_epoch(n, batch_size)
    chunk = math.ceil(steps / evals_per_epoch)
    chunks = max(1, round(epochs * steps / chunk))
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(n, seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size).repeat())
    log = epoch_log(x, y)
    loss_fn = keras.losses.get(model.loss)
    loss0 = float(np.mean(loss_fn(y, predict_proba(model, x))))
    train(model, ds, epochs=chunks, steps_per_epoch=chunk, callbacks=[log],
          desc=desc or f"batch {batch_size}")
    step_counts = chunk * np.arange(chunks + 1)
    lr = float(np.asarray(model.optimizer.learning_rate))
    return RegimeRun(batch_size, lr, step_counts / steps, step_counts,
                     np.concatenate([[0.0], np.cumsum(log.seconds)]), np.asarray([loss0] + log.loss))


def show_batch_choice(grid: dict, n_examples: int, batch_size: int, learning_rate: float):
    """Widget body: the loss curve of one (batch size, learning rate) from a precomputed
    grid (see gradient_noise.loss_curve_grid) against epochs, with the other batch
    sizes at the same learning rate in grey. One panel, linear axes: it must redraw fast."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    epochs, loss = grid[(batch_size, learning_rate)]
    steps = steps_per_epoch(n_examples, batch_size)
    final = loss[-1]
    verdict = "diverged" if not np.isfinite(final) or final > loss[0] else f"final loss {final:.3f}"
    fig, ax = figure(width=6.0, height=3.4,
                     finding=f"B={batch_size}, lr={learning_rate}: {steps} steps/epoch, {verdict}")
    for (b, lr), (e, l) in grid.items():
        if lr == learning_rate and b != batch_size:
            ax.plot(e, l, color="0.8", lw=1)
    ax.plot(epochs, loss, color="C0", lw=2.5, label=f"B={batch_size} ({steps * int(round(epochs[-1]))} steps)")
    ax.set(xlabel="epochs", ylabel="training loss (cross-entropy)", ylim=(0, 2.5))
    ax.legend(title="grey: other batch sizes, same lr")
    plt.show()
    return {"steps_per_epoch": steps, "final_loss": float(final)}


@dataclass(frozen=True)
class TargetRun:
    """One run stopped at a target training loss: steps to it (None: not reached; stopped_at says where
    a capped run was stopped), test accuracy there, the loss after every step and the training seconds."""
    batch_size: int
    learning_rate: float
    seed: int
    steps: int | None
    test_accuracy: float | None
    loss: np.ndarray
    seconds: float
    stopped_at: int | None = None


def compiled_steps_to_target(model, start_weights, sgd_until, n_examples: int, *, batch_size: int,
                             learning_rate: float, seed: int, target: float, max_steps: int,
                             test_accuracy=None, epochs_per_call: int = 8) -> TargetRun:
    """Train `model` from `start_weights` with the lesson's compiled loop until the training loss first
    reaches `target`: `sgd_until(orders, batch_size, target)` runs plain SGD over the rows of `orders`
    (one permutation of the examples per epoch) and returns the training loss after every step; it stops
    early only at the first step at or below the target, or when the loss is not finite or climbs above
    4 times where the call started (diverged).

    The epochs' orders come from `seed` (the same for every rate). At most about `max_steps` steps: a run
    cut there reports steps None and stopped_at. test_accuracy(): the model's test accuracy, taken when
    the target is reached.
    """
    import tensorflow as tf
    model.set_weights(start_weights)
    model.optimizer.learning_rate = learning_rate
    rng = np.random.default_rng(seed)
    spe = steps_per_epoch(n_examples, batch_size)
    losses, seconds, diverged = [], 0.0, False
    while len(losses) < max_steps:
        epochs = max(1, min(epochs_per_call, math.ceil((max_steps - len(losses)) / spe)))
        orders = tf.constant(np.stack([rng.permutation(n_examples) for _ in range(epochs)]).astype(np.int32))
        t0 = time.perf_counter()
        part = np.asarray(sgd_until(orders, tf.constant(batch_size, tf.int32), tf.constant(target, tf.float32)))
        seconds += time.perf_counter() - t0
        losses.extend(part.tolist())
        if part.size and part[-1] <= target:
            break
        if part.size < epochs * spe:           # stopped early without reaching the target: diverged
            diverged = True
            break
    losses = np.asarray(losses)
    if losses.size and losses[-1] <= target:
        acc = float(test_accuracy()) if test_accuracy is not None else None
        return TargetRun(batch_size, float(learning_rate), seed, int(losses.size), acc, losses, seconds)
    return TargetRun(batch_size, float(learning_rate), seed, None, None, losses, seconds,
                     stopped_at=None if diverged else int(losses.size))


def tuned_rate_sweep(train, batch_sizes, rates, seeds, *, max_steps: int, desc: str = "learning-rate sweep") -> dict:
    """train(batch_size, rate, seed, cap) -> TargetRun for every batch size, rate and seed, rates from the
    smallest up. Once some rate has reached the target on every seed, later runs are capped at twice
    that rate's median steps (they report stopped_at): a rate still short of the target there is far
    slower than one already found (this also stops runs stuck on a plateau). Returns
    {(B, rate, seed): TargetRun}."""
    from tqdm.auto import tqdm
    runs = {}
    with tqdm(total=len(batch_sizes) * len(rates) * len(seeds), desc=desc, unit="run") as bar:
        for b in batch_sizes:
            cap = max_steps
            for r in sorted(rates):
                bar.set_postfix(B=b, lr=f"{r:.3g}", refresh=False)
                for s in seeds:
                    runs[(b, r, s)] = train(b, r, s, cap)
                    bar.update(1)
                steps = [runs[(b, r, s)].steps for s in seeds]
                if all(steps):
                    cap = min(cap, 2 * int(np.median(steps)))
    return runs


def plot_steps_to_target(ax, per_batch: dict, fit: dict, model_name: str):
    """Steps to the target against batch size on `ax`: the median over seeds with min–max bars (a run that
    never reached the target counts as infinite), perfect scaling from the smallest batch, and the fitted
    S_min(1 + B_crit/B). per_batch: helpers.gradient_noise.at_tuned_rates's output; fit: fit_steps_model's.
    Returns a fine grid of batch sizes for further curves."""
    batches = np.array(list(per_batch), float)
    steps = [[s or np.inf for s in v["steps"]] for v in per_batch.values()]
    med, lo, hi = (np.array([f(s) for s in steps]) for f in (np.median, min, max))
    seeds = len(steps[0])
    ax.errorbar(batches, med, yerr=[med - lo, hi - med], fmt="o", color="C3", capsize=3,
                label=f"{model_name}: median, min–max over {seeds} fresh seeds")
    grid = np.geomspace(batches[0], batches[-1], 100)
    ax.plot(grid, med[0] * batches[0] / grid, ":", color="0.5", label="perfect scaling from the smallest batch")
    ax.plot(grid, fit["s_min"] * (1 + fit["b_crit"] / grid), "-", color="C0",
            label=f"fit S_min(1 + B_crit/B): B_crit = {fit['b_crit']:.0f}")
    return grid
