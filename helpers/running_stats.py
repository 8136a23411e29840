"""BN running statistics: how Keras's moving averages warm up, what the smaller
last batch of an epoch does to them, and what the train/validation gap of a BN
network is made of (lesson 04).

Shapes: images x are (N, 8, 8, 1) float32, labels y (N,) int. Statistics are
per channel, (C,) arrays, one (mean, variance) pair per BatchNormalization
layer in forward order (helpers.batchnorm.bn_layers).

Note: in Keras 3 a BN layer called eagerly with training=True *updates* its
moving statistics (not only inside fit). Functions here that run a model in
training mode restore the statistics afterwards (helpers.batchnorm.preserved_bn_state).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .workbook.frameworks import keras  # first: sets TensorFlow's environment
from .batchnorm import (assign_moving_statistics, batch_statistics, bn_layers, moving_statistics,
                        precise_statistics, preserved_bn_state, relative_error)
from .workbook.tables import Table


def statistics_errors(stored, exact) -> dict:
    """Errors of stored against exact statistics, averaged over the BN layers.

    var_rel_error: mean |v - v*| / v*; mean_error_in_sd: mean |mu - mu*| / sqrt(v*).
    Also per-layer lists under 'var_rel_error_per_layer'.
    """
    per_layer = [relative_error(v, ve) for (_, v), (_, ve) in zip(stored, exact)]
    mean_sd = [float(np.mean(np.abs(m - me) / np.sqrt(np.maximum(ve, 1e-12))))
               for (m, _), (me, ve) in zip(stored, exact)]
    return {"var_rel_error": float(np.mean(per_layer)), "mean_error_in_sd": float(np.mean(mean_sd)),
            "var_rel_error_per_layer": per_layer}


# --- watching the moving averages during fit -------------------------------------------------

def bn_kernels(model) -> np.ndarray:
    """All kernels that feed a BN layer (conv/dense layers without bias), flattened into one (P,) vector."""
    parts = [np.asarray(l.kernel).ravel() for l in model.layers
             if hasattr(l, "kernel") and not getattr(l, "use_bias", True)]
    return np.concatenate(parts) if parts else np.zeros(0)


def kernel_norm(model) -> float:
    """Euclidean norm of bn_kernels(model): the scale BN makes irrelevant to the output."""
    return float(np.linalg.norm(bn_kernels(model)))


def statistics_tracker(x_reference, *, every: int = 5, statistics: bool = True):
    """A Keras callback that, every `every` training steps, records the distance of the
    moving statistics from the exact statistics of the current (fixed) weights on
    x_reference (N, ...), and the kernel norm. Read `.records` (list of dicts) or `.table`.

    The step is read from the optimizer, so the tracker also works when the model runs
    several steps per call (compile(steps_per_execution=k)): Keras then calls it once per
    block, and it measures at the end of the first block that reaches each multiple of
    `every` — exactly at the multiples when k divides `every` (helpers.training.steps_per_call).
    """
    return StatisticsTracker(x_reference, every=every, statistics=statistics)


class StatisticsTracker(keras.callbacks.Callback):
    """statistics_tracker's callback: .records (a dict per measurement), .table, .column(name)."""

    def __init__(self, x_reference, *, every: int = 5, statistics: bool = True):
        super().__init__()
        self.x_reference, self.every, self.statistics = x_reference, every, statistics
        self.records, self.step, self.previous = [], 0, None

    def _measure(self):
        err = {"var_rel_error": float("nan"), "mean_error_in_sd": float("nan")}
        if self.statistics:
            exact = precise_statistics(self.model, self.x_reference, batch_size=4096, compiled=True)
            err = statistics_errors(moving_statistics(self.model), exact)
        w = bn_kernels(self.model)
        change = (float(np.linalg.norm(w - self.previous) / np.linalg.norm(self.previous))
                  if self.previous is not None else float("nan"))
        self.previous = w
        self.records.append({"step": self.step, "var_rel_error": err["var_rel_error"],
                             "mean_error_in_sd": err["mean_error_in_sd"],
                             "kernel_norm": float(np.linalg.norm(w)), "relative_change": change})

    def on_train_begin(self, logs=None):
        self._start = int(self.model.optimizer.iterations.numpy()) - self.step   # steps of earlier fits
        self._measure()

    def on_train_batch_end(self, batch, logs=None):
        before, self.step = self.step, int(self.model.optimizer.iterations.numpy()) - self._start
        if self.step // self.every > before // self.every:
            self._measure()

    def on_train_end(self, logs=None):
        if self.records[-1]["step"] != self.step:
            self._measure()

    @property
    def table(self) -> Table:
        return Table.from_records(self.records)

    def column(self, name: str) -> np.ndarray:
        return np.array([r[name] for r in self.records])


# --- the regularization section (its model is helpers.models.regularized_cnn) -------------------

def dropout_variance_shift(model, x, *, layer_name: str = "norm_dense", batch_size: int = 1024) -> dict:
    """Variance of a BN layer's input with dropout active vs inactive, weights fixed.

    Earlier BN layers run in inference mode in both passes (only dropout differs),
    so the ratio isolates the shift dropout causes. x: (N, ...). Returns
    train_var (C,), inference_var (C,), and ratio = mean over channels of train/inference.
    """
    layer = model.get_layer(layer_name)
    inputs = model.inputs[0]
    feature_model = keras.Model(inputs, layer.input)
    drop = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]

    def collect(dropout_on: bool) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch_size):
            # Dropout follows `training`; BN layers are frozen (trainable=False => inference mode)
            outs.append(np.asarray(feature_model(x[i:i + batch_size], training=dropout_on)))
        return np.concatenate(outs)

    frozen = [(l, l.trainable) for l in bn_layers(model)]
    with preserved_bn_state(model):
        for l, _ in frozen:
            l.trainable = False
        try:
            train_var = batch_statistics(collect(bool(drop)), unbiased=True)[1]
            inference_var = batch_statistics(collect(False), unbiased=True)[1]
        finally:
            for l, t in frozen:
                l.trainable = t
    ratio = float(np.mean(train_var / np.maximum(inference_var, 1e-12)))
    return {"train_var": train_var, "inference_var": inference_var, "ratio": ratio}


# --- one update from the exact statistics: the error a small last batch adds ----------------

def single_update_errors(model, x, *, batch_sizes, momentums, draws: int = 30, seed: int = 0) -> Table:
    """Start every BN layer at its exact statistics, apply ONE Keras training-mode update
    with a random batch of b samples of x at the given momentum, and measure the
    relative error of the moving variance (mean over layers and `draws` batches).

    x: (N, ...) training inputs. Returns a Table with columns momentum, batch size, the mean
    relative error and its sd over the draws, then one column per BN layer
    (its name: that layer's mean error over the draws). The model is left unchanged.
    """
    rng = np.random.default_rng(seed)
    layers = bn_layers(model)
    exact = precise_statistics(model, x)
    rows = []
    with preserved_bn_state(model):
        old_momentum = [l.momentum for l in layers]
        try:
            for momentum in momentums:
                for l in layers:
                    l.momentum = float(momentum)
                for b in batch_sizes:
                    errs, per_layer = [], []
                    for _ in range(draws):
                        assign_moving_statistics(model, exact)
                        idx = rng.choice(len(x), size=int(b), replace=False)
                        model(x[idx], training=True)  # Keras 3: this call updates the moving statistics
                        e = statistics_errors(moving_statistics(model), exact)
                        errs.append(e["var_rel_error"])
                        per_layer.append(e["var_rel_error_per_layer"])
                    rows.append([float(momentum), int(b), float(np.mean(errs)), float(np.std(errs)),
                                 *[float(v) for v in np.mean(per_layer, axis=0)]])
        finally:
            for l, m in zip(layers, old_momentum):
                l.momentum = m
    return Table(["momentum", "batch size", "moving variance rel. error", "… sd over draws", *[l.name for l in layers]],
                 rows, title="One update from the exact statistics: mean over layers, then per layer")


# --- NumPy simulation of the moving variance (for the widget) -------------------------------

@dataclass
class Simulation:
    """Relative error of a simulated moving variance after every step.

    error: (steps,) mean over channels of |v - v*| / v*; last_steps: indices of
    the steps that used the smaller last batch.
    """
    error: np.ndarray
    last_steps: np.ndarray
    steps_per_epoch: int
    extra: dict = field(default_factory=dict)


def simulate_running_variance(*, momentum: float, batch_size: int, last_batch: int, full_batches: int = 44,
                              epochs: int = 3, channels: int = 64, true_variance: float = 0.05,
                              initial_variance: float = 1.0, samples_per_channel: int = 1,
                              seed: int = 0) -> Simulation:
    """Keras's moving-variance update replayed in NumPy on Gaussian channels.

    Every epoch has `full_batches` batches of `batch_size` and then, unless
    last_batch == 0 (dropped), one batch of `last_batch` samples. Each sample
    contributes `samples_per_channel` values per channel (64 for an 8x8 conv
    map, 1 for a dense layer). The batch statistic is the biased variance, as
    Keras stores it; the moving variance starts at `initial_variance` (Keras: 1).
    """
    rng = np.random.default_rng(seed)
    sizes = [batch_size] * full_batches + ([last_batch] if last_batch > 0 else [])
    n = np.array(sizes * epochs)[:, None] * samples_per_channel  # values per channel in each step
    # biased variance of n Gaussian values: sigma^2 * chi2(n - 1) / n (exactly 0 when n == 1)
    chi2 = rng.chisquare(np.maximum(n - 1, 1), size=(len(n), channels))
    batch_var = np.where(n > 1, true_variance * chi2 / n, 0.0)
    moving = np.full(channels, float(initial_variance))
    error = np.empty(len(n))
    for t in range(len(n)):
        moving = momentum * moving + (1.0 - momentum) * batch_var[t]
        error[t] = np.abs(moving - true_variance).mean()
    error /= true_variance
    last_steps = np.arange(len(sizes) - 1, len(n), len(sizes)) if last_batch > 0 else np.array([], int)
    return Simulation(error=error, last_steps=last_steps, steps_per_epoch=len(sizes))


def simulation_view(*, batch_size: int = 32, full_batches: int = 44, seed: int = 0, true_variance: float = 0.05):
    """A widget body: view(momentum, last_batch, epochs) draws the simulated moving-variance
    error over steps, last batch kept vs dropped, and shows it as a PNG.

    The figure is created once and only its lines are updated, so a redraw is cheap.
    Returns the plain function (callable without widgets); it also returns the
    final errors (kept, dropped) for tests.
    """
    import io
    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from .workbook.plotting import STYLE
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 3.4), dpi=72)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        kept_line, = ax.plot([], [], label="last batch kept")
        drop_line, = ax.plot([], [], "--", label="last batch dropped")
        dots, = ax.plot([], [], "o", color="C3", ms=4, label="right after a last-batch update")
        ax.set_yscale("log")
        # a cheaper redraw: no minor ticks, plain tick labels (no mathtext), fast PNG compression below
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=4))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.grid(False)
        ax.set_xlabel("training step")
        ax.set_ylabel("moving variance: relative error")
        ax.legend(loc="upper right")
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.88)

    def view(momentum: float = 0.99, last_batch: int = 1, epochs: int = 3):
        from IPython.display import Image, display
        kept = simulate_running_variance(momentum=momentum, batch_size=batch_size, last_batch=last_batch,
                                         full_batches=full_batches, epochs=epochs, seed=seed,
                                         true_variance=true_variance)
        dropped = simulate_running_variance(momentum=momentum, batch_size=batch_size, last_batch=0,
                                            full_batches=full_batches, epochs=epochs, seed=seed,
                                            true_variance=true_variance)
        kept_line.set_data(np.arange(1, len(kept.error) + 1), kept.error)
        drop_line.set_data(np.arange(1, len(dropped.error) + 1), dropped.error)
        dots.set_data(kept.last_steps + 1, kept.error[kept.last_steps])
        both = np.concatenate([kept.error, dropped.error])
        ax.set_xlim(0, len(kept.error) + 1)
        ax.set_ylim(max(both.min() * 0.7, 1e-4), both.max() * 1.5)
        ax.set_title(f"momentum {momentum:g}, {epochs} epochs: final error {kept.error[-1]:.3f} with a last "
                     f"batch of {last_batch}, {dropped.error[-1]:.3f} without", fontsize=10, fontweight="bold")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
        display(Image(buf.getvalue()))
        return kept.error[-1], dropped.error[-1]

    return view


def check_sizes(*, epochs: int, batch_size: int, train_size: int, long_epochs: int) -> None:
    """Lesson 04's size parameters together: a smaller last batch must exist, and the steps of one short
    run (≤ 2250: every run tracks the exact statistics every few steps) and of one long run (≤ 6000) are bounded."""
    from .workbook.params import check_cost, check_relation
    check_relation(train_size % batch_size != 0,
                   f"parameter 'train_size' = {train_size} is a multiple of batch_size = {batch_size}: "
                   "expected a size that leaves a smaller last batch (e.g. k·batch_size + 1)")
    check_relation(train_size > batch_size,
                   f"parameter 'train_size' = {train_size} must be larger than batch_size = {batch_size}")
    steps = -(-train_size // batch_size)
    check_cost(epochs * steps, 2250, {"epochs": epochs, "batch_size": batch_size, "train_size": train_size},
               unit="training steps per run", what="each of the lesson's training runs")
    check_cost(long_epochs * steps, 6000, {"long_epochs": long_epochs, "batch_size": batch_size, "train_size": train_size},
               unit="training steps per long run", what="each of the long runs")


def plot_lines(series: dict, *, finding: str, xlabel: str, ylabel: str, logx: bool = False, logy: bool = False,
               vline: float | None = None, ax=None, width: float | None = None):
    """One panel of lines: series {label: (x, y)} or {label: (x, y, format)}; `finding` titles the figure
    (None when `ax` is given). Draws into `ax` and returns it, or shows a new figure and returns None.
    Plotting plumbing for lesson 04's figures."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    show = ax is None
    if show:
        _, ax = figure(finding=finding, width=width)
    for label, (x, y, *fmt) in series.items():
        ax.plot(x, y, *fmt, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if vline is not None:
        ax.axvline(vline, color="0.8", lw=1)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    if show:
        plt.show()
        return None
    return ax


def plot_bars(rows, columns: dict, *, finding: str, xlabel: str = "accuracy (fraction of images correct)") -> None:
    """Horizontal grouped bars: one group per row (row[0] its label), one bar per {column index: legend name}."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    _, ax = figure(width=8, finding=finding)
    ypos = np.arange(len(rows))
    for k, (col, name) in enumerate(columns.items()):
        ax.barh(ypos + (k - (len(columns) - 1) / 2) * 0.27, [r[col] for r in rows], height=0.25, label=name)
    ax.set_yticks(ypos, [r[0] for r in rows])
    ax.set(xlabel=xlabel, xlim=(0, 1.0))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(columns))
    plt.show()


# --- lesson 04's formulas and tables, kept off the page ---------------------------------------

def last_batch_error_formula(momentum: float, batch_size: int) -> float:
    """Steady-state relative error of a dense BN's moving variance right after a last batch of one image.

    The full batches of b = batch_size images leave the average at v·(1 − 1/b + ε), ε ~ N(0, s) with
    s = √((1 − m)/(1 + m) · 2(b − 1)/b²), m = momentum; the last batch (variance 0) multiplies it by m.
    Returns E|m(1 − 1/b + ε) − 1|: a folded normal with centre 1 − m(1 − 1/b) and spread m·s (lesson 04)."""
    from math import erf, exp, pi, sqrt
    m, b = momentum, batch_size
    s = sqrt((1 - m) / (1 + m) * 2 * (b - 1) / b**2)
    mu, sd = 1 - m * (1 - 1 / b), m * s
    return sd * sqrt(2 / pi) * exp(-mu**2 / (2 * sd**2)) + mu * erf(mu / (sd * sqrt(2)))


def predicted_dropout_ratio(model, x, rate: float) -> float:
    """The variance inflation dropout (rate p = `rate`, kept with q = 1 − p) before the layer "dense" predicts for
    that layer's output z = h W: per channel 1 + (p/q)·E[Σᵢ Wᵢ² hᵢ²] / Var(z), averaged over channels.

    h (N, F) is the input of the layer named "dropout" with every layer in inference mode; x: (N, ...)."""
    h = np.asarray(keras.Model(model.inputs[0], model.get_layer("dropout").input)(x, training=False), np.float64)
    W = np.asarray(model.get_layer("dense").kernel, np.float64)
    z = h @ W
    extra = rate / (1 - rate) * np.mean(h**2 @ W**2, axis=0)      # variance the masks add, per channel
    return float(np.mean(1 + extra / z.var(axis=0, ddof=1)))


def warmup_table(rows, *, title: str) -> Table:
    """Lesson 04's warm-up rows [momentum, steps, fit accuracy, validation accuracy as trained, after precise BN,
    moving variance rel. error, moving mean error in SDs, momentum^steps] under readable headers."""
    return Table(["momentum", "steps", "fit reports (training mode)", "validation (inference mode)",
                  "validation after precise BN", "moving variance rel. error", "moving mean error (SDs)",
                  "leftover momentum^steps of the start"], rows, title=title)


def drop_remainder_table(rows, *, leftover_dominates: bool) -> Table:
    """Lesson 04's last batch kept vs dropped, rows [momentum, steps kept, steps dropped, error kept, error dropped,
    ratio dropped/kept, predicted ratio momentum^−(steps kept − steps dropped), val accuracy kept, dropped].

    The prediction holds only while the leftover of the starting value dominates the error (momentum 0.99 after a
    short run, `leftover_dominates`); elsewhere its cell says so. `rows` is not modified."""
    rows = [list(r) for r in rows]
    for r in rows:
        if not (r[0] == 0.99 and leftover_dominates):
            r[6] = "— (leftover gone)"
    r99 = next(r for r in rows if r[0] == 0.99)
    title = (f"drop_remainder=True: {r99[1] - r99[2]} updates fewer; "
             + (f"at momentum 0.99 the error is {r99[5]:.4f}× larger, the leftover predicts {r99[6]:.4f}×"
                if leftover_dominates else "the leftover of the starting value is gone at both momentums"))
    return Table(["momentum", "steps, kept", "steps, dropped", "moving variance rel. error, kept", "… dropped",
                  "ratio dropped / kept", "momentum^−(steps kept − steps dropped)", "val accuracy, kept", "… dropped"],
                 rows, digits=5, title=title)


def plot_gap_parts(runs: dict, *, finding: str) -> None:
    """One panel per run {title: rows (n, 6) [epoch, fit accuracy, BN mode mismatch, overfitting, reported gap,
    validation]}: the reported gap and its two parts over the epochs, on a shared y axis."""
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    _, axes = figure(len(runs), sharey=True, finding=finding)
    for ax, (name, rows) in zip(np.atleast_1d(axes), runs.items()):
        plot_lines({"reported gap (fit − validation)": (rows[:, 0], rows[:, 4], "k-"),
                    "BN mode mismatch": (rows[:, 0], rows[:, 2], "--"), "overfitting": (rows[:, 0], rows[:, 3], ":")},
                   finding=None, ax=ax, xlabel="epoch", ylabel="accuracy difference (fraction)").set_title(name)
    plt.show()
