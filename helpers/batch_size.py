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

from .workbook.frameworks import keras, tf


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
    from .training import epoch_log, predict_proba, train
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


def diverged(run) -> bool:
    """A run to a target (TargetRun, or gradient_noise.StepsToTarget) that blew up: it never reached the target
    and was not stopped short of it (pruned, or out of steps)."""
    return run.steps is None and run.stopped_at is None


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
    model.set_weights(start_weights)
    model.optimizer.learning_rate = learning_rate
    rng = np.random.default_rng(seed)
    spe = steps_per_epoch(n_examples, batch_size)
    losses, seconds, blew_up = [], 0.0, False
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
            blew_up = True
            break
    losses = np.asarray(losses)
    if losses.size and losses[-1] <= target:
        acc = float(test_accuracy()) if test_accuracy is not None else None
        return TargetRun(batch_size, float(learning_rate), seed, int(losses.size), acc, losses, seconds)
    return TargetRun(batch_size, float(learning_rate), seed, None, None, losses, seconds,
                     stopped_at=None if blew_up else int(losses.size))


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


def plot_regimes(regimes: dict, finding: str) -> None:
    """Lesson 01, section 2: the training loss of each RegimeRun ({name: run}) against epochs, optimizer steps
    and training seconds, one panel each; `finding` is the figure's title."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    fig, axes = figure(3, finding=finding)
    for name, r in regimes.items():
        for ax, x in zip(axes, [r.epochs, r.steps, r.seconds]):
            ax.plot(x, r.loss, marker="o", ms=3, label=name)
    axes[0].set(xlabel="epochs (passes over the data)", ylabel="training loss (cross-entropy)")
    axes[1].set(xlabel="optimizer steps", xscale="symlog")
    axes[2].set(xlabel="training time on this machine (s)")
    axes[0].legend()
    plt.show()


def regime_table(regimes: dict, n_examples: int):
    """Lesson 01, section 2: one row per RegimeRun ({name: run}): batch, rate, steps per epoch, epochs and
    steps run, final training loss and training seconds per epoch."""
    from .workbook.tables import Table
    return Table(["run", "batch", "learning rate", "steps per epoch", "epochs", "steps", "final training loss",
                  "seconds per epoch"],
                 [[name, r.batch_size, r.learning_rate, steps_per_epoch(n_examples, r.batch_size),
                   round(float(r.epochs[-1]), 3), int(r.steps[-1]), float(r.loss[-1]), r.seconds_per_epoch]
                  for name, r in regimes.items()])


def show_steps_to_target(per_batch: dict, fit: dict, model_name: str, target: float, *, finding: str, ylim,
                         noise_scales: dict | None = None) -> None:
    """Lesson 01, sections 5 and 6: plot_steps_to_target in a figure of its own, log-log, titled `finding`;
    for each predicted noise scale ({name: B}) the curve S_min(1 + B/B_batch) it predicts, dashed."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    fig, ax = figure(width=7.5, height=4.5, finding=finding)
    grid = plot_steps_to_target(ax, per_batch, fit, model_name)
    for (name, scale), style in zip((noise_scales or {}).items(), ("--", "-.", ":")):
        ax.plot(grid, fit["s_min"] * (1 + scale / grid), style, color="0.3",
                label=f"predicted by {name} = {scale:.0f}: S_min(1 + {name}/B)")
    ax.set(xscale="log", yscale="log", xlabel="batch size B (examples)", ylabel=f"steps to training loss {target}",
           ylim=ylim)
    ax.legend(fontsize=7, loc="upper right")
    plt.show()


def tuned_rate_table(per_batch: dict, rates: dict, n_examples: int, target: float, extra: dict | None = None):
    """Lesson 01, sections 5 and 6: one row per batch size at its tuned rate. per_batch: the
    {B: {"steps": [steps or None per seed], "acc": [test accuracies]}} of gradient_noise.at_tuned_rates;
    rates: {B: tuned rate}; extra: more columns {header: {B: value}}, shown after the noise temperature.
    A run that never reached the target counts as infinite in the median."""
    from .workbook.tables import Table
    extra = extra or {}
    rows = []
    for b, v in per_batch.items():
        steps = [s or np.inf for s in v["steps"]]
        med = float(np.median(steps))
        acc = f"{np.mean(v['acc']):.3f} ± {np.std(v['acc'], ddof=1):.3f}" if len(v["acc"]) > 1 else "-"
        rows.append([b, rates[b], rates[b] * n_examples / b, *(column[b] for column in extra.values()),
                     f"{med:.0f} ({min(steps):.0f}–{max(steps):.0f})", f"{sum(1 for s in v['steps'] if s)}/{len(steps)}",
                     f"{med * b:,.0f} ({med * b / n_examples:.2f})", acc])
    return Table(["batch", "tuned rate", "noise temperature ε·N/B", *extra,
                  "steps to the target, fresh seeds: median (min–max)", "fresh seeds reaching the target",
                  f"examples (epochs) to loss {target}", "test accuracy at the target (mean ± sd)"], rows)


def median_steps_table(runs: dict, batch_sizes, rates, seeds):
    """Lesson 01, section 6: the median over `seeds` of the steps to the target of every (batch size, rate) of a
    tuned_rate_sweep ({(B, rate, seed): TargetRun}); "inf" where most runs did not reach it, "–" where every run
    diverged."""
    from .workbook.tables import Table

    def median(b, r):
        if all(diverged(runs[(b, r, s)]) for s in seeds):
            return "–"
        return f"{np.median([runs[(b, r, s)].steps or np.inf for s in seeds]):.0f}"
    return Table(["batch"] + [f"rate {r:.2g}" for r in rates], [[b] + [median(b, r) for r in rates] for b in batch_sizes],
                 title="median steps to the target on the tuning seeds (inf: not reached on most seeds; –: diverged on every seed)")
