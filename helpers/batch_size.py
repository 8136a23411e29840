"""Steps, epochs and batch sizes: the arithmetic, a like-for-like comparison of
full-batch, mini-batch and single-example training, and activation memory.
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


def steps_to_loss(run: RegimeRun, target: float) -> int | None:
    """Optimizer steps of the first logged point with loss ≤ target (None if the run never gets there)."""
    hit = np.flatnonzero(np.asarray(run.loss) <= target)
    return int(run.steps[hit[0]]) if hit.size else None


def compiled_sgd_run(model, start_weights, sgd_steps, training_loss, n_examples: int, *, batch_size: int,
                     learning_rate: float, epochs: int, seed: int = 0, evals_per_epoch: int = 1,
                     stop_if_diverged: bool = False) -> RegimeRun:
    """Train `model` from `start_weights` at `learning_rate` for `epochs` passes, with the lesson's
    compiled loop: `sgd_steps(order, batch_size)` runs one SGD step per `batch_size` examples of the
    int32 index tensor `order`; `training_loss()` returns the loss on the whole training set.

    Every epoch draws a fresh permutation from `seed` (the same orders for every rate and batch size)
    and is cut into `evals_per_epoch` chunks of whole batches, the loss logged after each. seconds
    count the sgd_steps calls only. With stop_if_diverged, a run whose loss rises above its starting
    loss (or is not finite) stops there: its last logged loss is what it reached.
    """
    import tensorflow as tf
    model.set_weights(start_weights)
    model.optimizer.learning_rate = learning_rate
    rng = np.random.default_rng(seed)
    spe = steps_per_epoch(n_examples, batch_size)
    chunk = math.ceil(spe / max(1, min(evals_per_epoch, spe)))
    b = tf.constant(batch_size, tf.int32)
    steps, seconds, loss = [0], [0.0], [float(training_loss())]
    for _ in range(epochs):
        order = rng.permutation(n_examples).astype(np.int32)
        for first in range(0, spe, chunk):
            part = tf.constant(order[first * batch_size:(first + chunk) * batch_size])
            t0 = time.perf_counter()
            sgd_steps(part, b)
            seconds.append(seconds[-1] + time.perf_counter() - t0)
            steps.append(steps[-1] + min(chunk, spe - first))
            loss.append(float(training_loss()))
        if stop_if_diverged and not (np.isfinite(loss[-1]) and loss[-1] <= loss[0]):
            break
    steps = np.asarray(steps)
    return RegimeRun(batch_size, float(learning_rate), steps / spe, steps, np.asarray(seconds), np.asarray(loss))


def learning_rate_grid(train, batch_sizes, rates, desc: str = "learning-rate grid") -> dict:
    """train(batch_size, rate) -> RegimeRun for every pair, under one tqdm bar: {(B, rate): run}."""
    from tqdm.auto import tqdm
    pairs = [(b, r) for b in batch_sizes for r in rates]
    runs = {}
    with tqdm(total=len(pairs), desc=desc, unit="run") as bar:
        for b, r in pairs:
            bar.set_postfix(B=b, lr=r, refresh=False)
            runs[(b, r)] = train(b, r)
            bar.update(1)
    return runs


def best_rates(runs: dict) -> dict:
    """{B: the rate whose run ends at the lowest finite training loss}, from learning_rate_grid's output."""
    best = {}
    for (b, r), run in runs.items():
        final = float(run.loss[-1]) if np.isfinite(run.loss[-1]) else np.inf
        if b not in best or final < best[b][1]:
            best[b] = (r, final)
    return {b: r for b, (r, _) in best.items()}
