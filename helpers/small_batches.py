"""Batch normalization with tiny mini-batches (lesson 02).

What the lesson measures, as plain functions with explicit arguments and seeds:

    class_dependent_pixel(x, y)          one number per image: the quantity the estimator study samples
    estimator_trials(...)                Monte Carlo draws of batch means / biased variances
    estimator_table(...)                 ratio E[biased var] / true var per batch size, with standard errors
    numpy_vs_keras(...)                  a NumPy BN (the notebook's) against keras.layers.BatchNormalization
    bn_output_signs(...)                 per BN layer of a model: how many outputs are +-1 on one batch
    keras_stored_variance(...)           what Keras 3 writes into moving_variance after one step
    accuracy_on_batches(...)             training-mode accuracy with the test set cut in i.i.d. or same-class batches
    Sweep                                trains a model builder (the notebook's) over norms x batch sizes x
                                         batch orders, reusing one compiled model per normalization (fast);
                                         Sweep.trained restores a run's weights as trained (before precise BN)
    sweep_table / remedies_table         the tables a learner compares
    committed_mnist1d_rows / _seeds      the MNIST-1D runs committed in data/mnist1d_runs.csv (one seed / all)
    row_spreads                          a retrained row judged by the committed seeds' spread
                                         `python -m helpers.small_batches` regenerates the table
                                         (regenerate_mnist1d, with the page's builder: page_builder)
    committed_tiny_seeds / tiny_settings the all-conv variant and the headline rows over seeds in
    headline_rows / allconv_table        data/tiny_batch_runs.csv (`python -m helpers.small_batches tiny`,
                                         regenerate_tiny); tiny_sweep trains one of its rows again
    mnist1d_results                      section 5's four MNIST-1D rows: committed, and the ones trained now judged
    clipping_schedule(...)               a Keras callback that moves renorm's clipping bounds on a schedule
    estimator_panel(...)                 the widget function (live estimator + highlighted sweep row)

Array shapes are given in each docstring. Importing this module has no side effects.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .batchnorm import batch_statistics, bn_layers, precise_bn, preserved_bn_state
from .data import epoch_batches
from .training import accuracy
from .workbook.tables import Table

ORDERS = ("iid", "grouped")
ORDER_LABELS = {"iid": "i.i.d.", "grouped": "correlated (same class)"}
NORM_LABELS = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm", "none": "no norm",
               "dense_ln": "BN in the convs, LayerNorm after the dense layer",
               "renorm": "Batch Renorm", "renorm_clipped": "Batch Renorm (clipped)",
               "renorm_scheduled": "Batch Renorm (paper's schedule)",
               "allconv_batch": "all-conv, BatchNorm", "allconv_group": "all-conv, GroupNorm"}
# Batch renormalization's final clipping in Ioffe 2017 (sec. 4.1): r in [1/3, 3], |d| <= 5.
RENORM_CLIPPING = {"rmin": 1.0 / 3.0, "rmax": 3.0, "dmax": 5.0}

# Wu & He 2018 (Group Normalization), Table 2: ResNet-50 ImageNet validation error (%) by batch per GPU.
GN_PAPER_ERROR = {"batch per GPU": [32, 16, 8, 4, 2], "BN": [23.6, 23.7, 24.8, 27.3, 34.7],
                  "GN": [24.1, 24.2, 24.0, 24.2, 24.1]}


# ---------------------------------------------------------------- the estimator


def between_class_share(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of each column's variance that lies between class means: values (N, F) -> (F,).

    1 - (class-size-weighted within-class variance) / total variance; 0 for constant columns.
    """
    values = np.asarray(values, np.float64)
    total = values.var(axis=0)
    within = sum(np.mean(labels == c) * values[labels == c].var(axis=0) for c in np.unique(labels))
    return np.where(total > 1e-12, 1.0 - within / np.maximum(total, 1e-12), 0.0)


def class_dependent_pixel(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, tuple[int, int], float]:
    """The pixel whose intensity differs most between classes, as a BN channel might see it.

    x (N, H, W, 1), labels (N,) -> (values (N,) float64, (row, col), between-class share of its variance).
    Same-class batches see only the within-class part of its variance.
    """
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    share = between_class_share(flat, labels)
    k = int(np.argmax(share))
    return flat[:, k], (k // x.shape[2], k % x.shape[2]), float(share[k])


def estimator_trials(values: np.ndarray, labels: np.ndarray, batch_size: int, trials: int,
                     rng: np.random.Generator, order: str = "iid") -> tuple[np.ndarray, np.ndarray]:
    """Draw `trials` batches of `batch_size` values; return (batch means, biased batch variances), each (trials,).

    values (N,), labels (N,). Samples are drawn with replacement, so the theory
    E[biased variance] = (m-1)/m * population variance holds exactly for i.i.d. batches.
    order="grouped": each batch comes from one class, the class picked in proportion to its size.
    """
    values = np.asarray(values, np.float64)
    n = len(values)
    if order == "iid":
        idx = rng.integers(0, n, size=(trials, batch_size))
    elif order == "grouped":
        classes, counts = np.unique(labels, return_counts=True)
        members = [np.flatnonzero(labels == c) for c in classes]
        pick = rng.choice(len(classes), size=trials, p=counts / counts.sum())
        offsets = (rng.random((trials, batch_size)) * counts[pick][:, None]).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        idx = np.concatenate(members)[starts[pick][:, None] + offsets]
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    batch = values[idx]
    return batch.mean(axis=1), batch.var(axis=1)


def estimator_table(values: np.ndarray, labels: np.ndarray, batch_sizes: Sequence[int], trials: int,
                    rng: np.random.Generator, order: str = "iid") -> Table:
    """Per batch size m: the measured E[biased var]/true var, its standard error, the m/(m-1)
    corrected ratio and its standard error, the theory (m-1)/m, the spread (standard deviation)
    of the batch mean in population sds, and the coefficient of variation (sd / mean) of the
    batch variance (sqrt(2/(m-1)) for normal data). values, labels: (N,).
    """
    values = np.asarray(values, np.float64)
    true_mean, true_var = values.mean(), values.var()
    true_sd = np.sqrt(true_var)
    rows = []
    for m in batch_sizes:
        means, variances = estimator_trials(values, labels, m, trials, rng, order)
        ratio = variances / true_var
        corrected = ratio * m / (m - 1)
        se = ratio.std(ddof=1) / np.sqrt(trials)
        rows.append([m, (m - 1) / m, float(ratio.mean()), float(se), float(corrected.mean()),
                     float(se * m / (m - 1)), float(np.std(means - true_mean) / true_sd),
                     float(ratio.std() / ratio.mean())])
    return Table(["batch size m", "theory (m-1)/m", "E[biased var]/var", "std error",
                  "E[corrected var]/var", "corrected std error", "sd of batch mean / sd",
                  "sd of batch var / its mean"], rows, title=f"Batch estimators, {ORDER_LABELS[order]} batches")


# --------------------------------------------------- the reference against Keras


def numpy_vs_keras(shapes: Iterable[tuple[int, ...]], rng: np.random.Generator, eps: float = 1e-3,
                   forward: Callable | None = None) -> Table:
    """Max |NumPy - Keras| for training and inference mode on random inputs of each shape.

    shapes: e.g. [(16, 5)] (dense) and [(4, 6, 6, 3)] (conv, channels last).
    forward(x, gamma, beta, *, training, moving_mean, moving_var, eps) -> y: the NumPy BN
    to compare (default: lesson 02's bn_forward, generated into helpers/lessons/l02.py from its cell).
    gamma, beta and the moving statistics are random too, so nothing matches by accident.
    """
    import keras
    if forward is None:
        from .lessons.l02 import bn_forward as forward
    rows = []
    for shape in shapes:
        c = shape[-1]
        x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
        gamma, beta = rng.uniform(0.5, 2.0, c), rng.normal(0, 1, c)
        mmean, mvar = rng.normal(0, 1, c), rng.uniform(0.5, 3.0, c)
        layer = keras.layers.BatchNormalization(epsilon=eps)
        layer.build(shape)
        layer.set_weights([a.astype(np.float32) for a in (gamma, beta, mmean, mvar)])
        # inference first: a training-mode call updates the moving statistics
        keras_inf = np.asarray(layer(x, training=False), np.float64)
        keras_tr = np.asarray(layer(x, training=True), np.float64)
        ours_tr = forward(x, gamma, beta, training=True, moving_mean=None, moving_var=None, eps=eps)
        ours_inf = forward(x, gamma, beta, training=False, moving_mean=mmean, moving_var=mvar, eps=eps)
        kind = "dense" if len(shape) == 2 else "conv"
        rows.append([f"{kind} {shape}", "training", float(np.max(np.abs(ours_tr - keras_tr)))])
        rows.append([f"{kind} {shape}", "inference", float(np.max(np.abs(ours_inf - keras_inf)))])
    return Table(["input shape", "mode", "max |NumPy - Keras|"], rows)


def bn_output_signs(model, x: np.ndarray, tol: float = 1e-2) -> Table:
    """Each BN layer's training-mode output on the batch x, with gamma and beta undone:
    the fraction of values within `tol` of +-1 and the median |output|. At batch 2 a layer
    that normalizes over 2 values per channel (a dense BN) gives +-1 wherever the two
    inputs differ by much more than sqrt(epsilon); epsilon pulls the others toward 0.

    Measured with a tap model (inputs -> each BN layer's input) and the layer itself;
    the moving statistics are left as they were.
    """
    import keras
    rows = []
    inputs = model.inputs[0]
    with preserved_bn_state(model):
        for layer in bn_layers(model):
            tap = keras.Model(inputs, layer.input)
            h = tap(x, training=True)
            y = np.asarray(layer(h, training=True), np.float64)
            z = (y - np.asarray(layer.beta)) / np.asarray(layer.gamma)
            rows.append([layer.name, str(tuple(h.shape)), int(np.prod(h.shape[:-1])),
                         float(np.mean(np.abs(np.abs(z) - 1) <= tol)), float(np.median(np.abs(z)))])
    return Table(["BN layer", "input shape", "values per channel", f"fraction of |output| within {tol} of 1",
                  "median |output|"], rows, digits=3)


def keras_stored_variance(batch_size: int, channels: int, rng: np.random.Generator) -> dict:
    """One training step of a Keras BN layer with momentum 0 on a random (batch_size, channels) batch.

    Returns {"stored", "biased", "unbiased"} as (channels,) arrays: with momentum 0
    the moving variance is exactly what Keras computed from this one batch.
    """
    import keras
    x = rng.normal(0.0, 2.0, size=(batch_size, channels)).astype(np.float32)
    layer = keras.layers.BatchNormalization(momentum=0.0)
    layer(x, training=True)
    _, biased = batch_statistics(x)
    _, unbiased = batch_statistics(x, unbiased=True)
    return {"stored": np.asarray(layer.moving_variance, np.float64), "biased": biased, "unbiased": unbiased}


@contextlib.contextmanager
def scaled_moving_variance(model, factors: Sequence[float] | float):
    """Multiply each BN layer's moving_variance by its factor inside the block (one float: all layers)."""
    layers = bn_layers(model)
    if np.isscalar(factors):
        factors = [float(factors)] * len(layers)
    with preserved_bn_state(model):
        for layer, f in zip(layers, factors):
            layer.moving_variance.assign(np.asarray(layer.moving_variance) * f)
        yield


def bn_sample_counts(model, batch_size: int) -> list[int]:
    """Values per channel each BN layer averages over in one training step: batch_size x positions.

    A dense BN sees batch_size values per channel; a conv BN on an (H, W, C) map sees
    batch_size * H * W — so Bessel's m/(m-1) is a different number for every layer.
    """
    return [int(batch_size * np.prod(layer.input.shape[1:-1])) for layer in bn_layers(model)]


def accuracy_on_batches(model, x: np.ndarray, y: np.ndarray, batch_size: int, order: str = "iid",
                        seed: int = 0) -> float:
    """Training-mode accuracy with the test set cut into batches of `batch_size` in `order`.

    x (N, ...), y (N,). "iid": shuffled batches; "grouped": same-class batches. Partial
    batches are dropped (Keras BN on one sample returns beta). Only the order is built
    here; the scoring is `helpers.training.accuracy(..., training=True)`, which leaves
    the moving statistics untouched. The calls go through one tf.function per model and
    mode (`compiled=True`, traced once for every batch size): an eager Keras call costs
    tens of ms, and scoring a test set at batch 2 takes ~180 of them.
    """
    batches = epoch_batches(y, batch_size, order, np.random.default_rng(seed), drop_remainder=True)
    idx = np.concatenate(batches)
    return accuracy(model, x[idx], y[idx], training=True, batch_size=batch_size, compiled=True)


# ------------------------------------------------------------------ training


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, order: str, epochs: int, seed: int):
    """(tf.data.Dataset, steps_per_epoch) of `epochs` epochs of full batches in `order`.

    x (N, ...), y (N,). A fresh shuffle per epoch; partial batches are
    dropped (in "grouped" order: the last batch of each class), so every step
    sees exactly `batch_size` samples. Built from tensors, not a generator: fast.
    """
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    per_epoch = [epoch_batches(y, batch_size, order, rng, drop_remainder=True) for _ in range(epochs)]
    steps = min(len(b) for b in per_epoch)
    idx = np.concatenate([np.concatenate(b[:steps]) for b in per_epoch])
    return tf.data.Dataset.from_tensor_slices((x[idx], y[idx])).batch(batch_size), steps


def sweep_cnn(norm: str, seed: int):
    """The workbook's small CNN (helpers.models.small_cnn) for `norm` in "batch", "group", "layer",
    "none", "renorm", "renorm_clipped". Lesson 02 builds its models on the page instead and
    passes its builder to Sweep; this one is the default and what the unit tests use."""
    import keras
    from .models import small_cnn
    keras.utils.set_random_seed(seed)
    if norm == "renorm":
        return small_cnn("batch", renorm=True, name="cnn_renorm")
    if norm == "renorm_clipped":
        return small_cnn("batch", renorm=True, renorm_clipping=dict(RENORM_CLIPPING), name="cnn_renorm_clipped")
    return small_cnn(norm)


@dataclass
class RunResult:
    """One training run and its scores on the test set."""
    norm: str
    order: str
    batch_size: int
    epochs: int
    learning_rate: float
    steps: int
    train_seconds: float
    acc: float                              # inference mode, as trained
    acc_train_mode: float | None            # training mode on test batches of batch_size (None: not scored)
    acc_precise: float | None = None        # BN only: after precise BN (population statistics)
    precise_seconds: float | None = None
    acc_corrected: float | None = None      # BN only: moving variance x m/(m-1), m = batch size, every layer
    acc_corrected_per_layer: float | None = None  # BN only: x n/(n-1), n = values per channel of each layer

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.norm, self.order, self.batch_size)


@dataclass
class Sweep:
    """Train a model for many (norm, order, batch size) settings on one data set.

    build(norm, seed) -> uncompiled Keras model (default: sweep_cnn). One model per
    normalization is built and compiled once; every run restores its initial weights
    and optimizer state, so runs of one norm start from the same point and only the
    batches differ (and no graph is traced twice). callbacks(norm, steps_total) -> a
    list of Keras callbacks for one run (e.g. a renorm clipping schedule); optional.

    The `epochs` shuffled epochs of a run are one dataset, passed to fit as ONE Keras
    epoch of steps_per_epoch x epochs steps, so that `steps_per_execution` steps per
    compiled call never changes which steps are taken: Keras runs whole blocks of
    steps_per_execution within each fit epoch, so with several fit epochs and a block
    that does not divide the epoch, an early epoch overruns into the next one's batches
    and the data is restarted before the end (2 epochs of 44 steps at 100 steps per
    call trained 176 steps, not 88). Per-batch callbacks fire once per block; read the step
    from model.optimizer.iterations. Per-epoch callbacks see one epoch.
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    epochs: int
    learning_rate: float
    seed: int
    steps_per_execution: int = 100
    build: Callable = sweep_cnn
    callbacks: Callable | None = None
    train_mode: bool = True                 # score every run in training mode as well
    results: dict = field(default_factory=dict)
    _models: dict = field(default_factory=dict, repr=False)
    _trained: dict = field(default_factory=dict, repr=False)

    def _model(self, norm: str):
        if norm not in self._models:
            import keras
            model = self.build(norm, self.seed)
            # Adam and the cross-entropy of helpers.models.compile_classifier, without its accuracy metric:
            # nothing here reads it, and it adds ops to every training step and to the traced graph.
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
                          loss="sparse_categorical_crossentropy", steps_per_execution=self.steps_per_execution)
            model.optimizer.build(model.trainable_variables)
            self._models[norm] = (model, model.get_weights(), [np.asarray(v) for v in model.optimizer.variables])
        return self._models[norm]

    def model(self, norm: str):
        """The model of `norm` as left by its latest run."""
        return self._model(norm)[0]

    def trained(self, norm: str, order: str, batch_size: int):
        """The model of `norm` with the weights and moving statistics a stored run ended its training with
        (before precise BN): the shared model, overwritten by the next run of `norm`."""
        model = self._model(norm)[0]
        model.set_weights(self._trained[(norm, order, batch_size)])
        return model

    def train(self, norm: str, order: str, batch_size: int, epochs: int | None = None):
        """Train from the initial state for `epochs` (default: the sweep's); return the trained
        model (shared: copy what you need), the steps per epoch and the training seconds."""
        from .training import train
        epochs = epochs or self.epochs
        model, weights, opt_state = self._model(norm)
        model.set_weights(weights)
        for v, a in zip(model.optimizer.variables, opt_state):
            v.assign(a)
        data, steps = training_dataset(self.x_train, self.y_train, batch_size, order, epochs,
                                       self.seed * 1000 + batch_size)
        total = steps * epochs
        extra = self.callbacks(norm, total) if self.callbacks else []
        hist = train(model, data, epochs=1, steps_per_epoch=total, progress=False,
                     desc=f"{norm} {order} b={batch_size}", callbacks=extra)
        done = int(model.optimizer.iterations.numpy())
        if done != total:   # every run takes exactly its steps: the comparisons count on it
            raise RuntimeError(f"{norm} {order} b={batch_size}: fit took {done} steps, expected {total}")
        return model, steps, hist.seconds

    def run(self, norm: str, order: str, batch_size: int, *, precise: bool = True,
            epochs: int | None = None) -> RunResult:
        """Train one setting, score it in both modes (and, for BN, corrected and precise); store it.

        epochs: train this run for other epochs than the sweep's (e.g. an equal-steps comparison)
        on the same compiled model (no second trace); such a run is returned, not stored in results.
        """
        epochs = epochs or self.epochs
        model, steps, seconds = self.train(norm, order, batch_size, epochs)
        if epochs == self.epochs:
            self._trained[(norm, order, batch_size)] = model.get_weights()
        xt, yt = self.x_test, self.y_test
        score = lambda: accuracy(model, xt, yt, compiled=True)  # noqa: E731  (one tf.function per model)
        res = RunResult(norm, order, batch_size, epochs, self.learning_rate, steps, seconds, score(),
                        accuracy_on_batches(model, xt, yt, batch_size, seed=self.seed) if self.train_mode else None)
        if bn_layers(model) and not norm.startswith("renorm"):
            with scaled_moving_variance(model, batch_size / (batch_size - 1)):
                res.acc_corrected = score()
            with scaled_moving_variance(model, [n / (n - 1) for n in bn_sample_counts(model, batch_size)]):
                res.acc_corrected_per_layer = score()
            if precise:
                t0 = time.perf_counter()
                precise_bn(model, self.x_train, compiled=True)
                res.precise_seconds = time.perf_counter() - t0
                res.acc_precise = score()
        if epochs == self.epochs:
            self.results[res.key] = res
        return res

    def run_all(self, settings: Sequence[tuple[str, str, int]], desc: str = "training sweep") -> list[RunResult]:
        """Run every (norm, order, batch_size) not yet run, under one progress bar (one tick per run)."""
        from tqdm.auto import tqdm
        todo = [s for s in settings if tuple(s) not in self.results]
        for norm, order, b in tqdm(todo, desc=desc, unit="run"):
            self.run(norm, order, b)
        return [self.results[tuple(s)] for s in settings]

    def get(self, norm: str, order: str, batch_size: int) -> RunResult:
        return self.results[(norm, order, batch_size)]


def sweep_table(results: Sequence[RunResult], highlight: tuple[str, int] | None = None,
                title: str | None = None) -> Table:
    """One row per run; highlight=(order, batch_size) bolds the matching rows."""
    rows, marked = [], []
    for i, r in enumerate(results):
        rows.append([NORM_LABELS[r.norm], ORDER_LABELS[r.order], r.batch_size, r.learning_rate, r.epochs,
                     r.steps * r.epochs, r.acc, "" if r.acc_train_mode is None else r.acc_train_mode - r.acc,
                     "" if r.acc_precise is None else r.acc_precise, round(r.train_seconds, 1)])
        if highlight is not None and (r.order, r.batch_size) == tuple(highlight):
            marked.append(i)
    return Table(["norm", "batches", "batch size", "Adam lr", "epochs", "steps", "test acc (inference)",
                  "train-mode − inference", "test acc after precise BN", "train s"], rows,
                 title=title, highlight=marked, digits=3)


def remedies_table(rows: Sequence[tuple[str, float, float, str]]) -> Table:
    """rows: (remedy, test accuracy, extra seconds measured, what it costs)."""
    return Table(["remedy (correlated batches of 2 unless stated)", "test acc", "seconds", "cost"],
                 [list(r) for r in rows], digits=3)


# ------------------------------------------- MNIST-1D runs: the committed table

MNIST1D_TABLE = "mnist1d_runs.csv"          # under data/ (helpers.workbook.committed.DATA_DIR)
MNIST1D_COLUMNS = ["seed", "mnist1d_epochs", "learning_rate", "norm", "batch_size", "epochs", "steps",
                   "acc", "acc_precise", "train_seconds"]
MNIST1D_SEEDS = (0, 1, 2, 3, 4, 5)
# the notebook's defaults: the table holds these settings only; any other setting trains every row live
MNIST1D_DEFAULTS = {"mnist1d_epochs": 2, "learning_rate": 0.001}


def mnist1d_settings(mnist1d_epochs: int) -> list[tuple[str, int, int]]:
    """(norm, batch size, epochs) of lesson 02's MNIST-1D rows: BN, dense LayerNorm and GroupNorm at i.i.d.
    batch 2 for `mnist1d_epochs`, and BN at batch 32 with as many steps (16x the epochs)."""
    return [("batch", 2, mnist1d_epochs), ("dense_ln", 2, mnist1d_epochs), ("group", 2, mnist1d_epochs),
            ("batch", 32, 16 * mnist1d_epochs)]


def mnist1d_row(res: RunResult, seed: int, mnist1d_epochs: int) -> dict:
    """One RunResult as a row of the committed table (MNIST1D_COLUMNS)."""
    return {"seed": seed, "mnist1d_epochs": mnist1d_epochs, "learning_rate": res.learning_rate, "norm": res.norm,
            "batch_size": res.batch_size, "epochs": res.epochs, "steps": res.steps, "acc": res.acc,
            "acc_precise": "" if res.acc_precise is None else res.acc_precise,
            "train_seconds": round(res.train_seconds, 2)}


def result_from_row(row: dict) -> RunResult:
    """A committed row as the RunResult the notebook's tables and checks read (scored in inference mode only)."""
    return RunResult(row["norm"], "iid", int(row["batch_size"]), int(row["epochs"]), float(row["learning_rate"]),
                     int(row["steps"]), float(row["train_seconds"]), float(row["acc"]), None,
                     None if row["acc_precise"] == "" else float(row["acc_precise"]))


def committed_mnist1d_rows(seed: int, mnist1d_epochs: int, learning_rate: float, path=None) -> dict:
    """{(norm, batch size): row} of the committed table for this seed and setting; {} when it is not tabulated."""
    return {k: rows[seed] for k, rows in committed_mnist1d_seeds(mnist1d_epochs, learning_rate, path).items()
            if seed in rows}


def committed_mnist1d_seeds(mnist1d_epochs: int, learning_rate: float, path=None) -> dict:
    """{(norm, batch size): {seed: row}} of every committed seed for this setting; {} when it is not tabulated."""
    from .workbook.committed import DATA_DIR, read_csv_rows
    rows = read_csv_rows(path or DATA_DIR / MNIST1D_TABLE, keep_text=("norm",))
    out: dict = {}
    for r in rows:
        if int(r["mnist1d_epochs"]) == mnist1d_epochs and abs(float(r["learning_rate"]) - learning_rate) <= 1e-12:
            out.setdefault((r["norm"], int(r["batch_size"])), {})[int(r["seed"])] = r
    return out


def row_spreads(live: RunResult, rows_by_seed: dict, seed: int, n_test: int) -> list:
    """A recomputed MNIST-1D run judged by the committed seeds of its setting (helpers.workbook.spread): its test
    accuracy and, where the model has BN, its precise-BN accuracy, each against the seeds' range widened by
    3 × max(binomial standard error on n_test signals, the seeds' sd). A run of another length is not comparable."""
    from .workbook.spread import Spread, binomial_se
    steps = {(int(r["steps"]), int(r["epochs"])) for r in rows_by_seed.values()}
    if steps != {(live.steps, live.epochs)}:
        raise ValueError(f"{live.norm} b={live.batch_size}: {live.steps} steps × {live.epochs} epochs, the committed "
                         f"rows have {sorted(steps)}: not the same run")
    own = rows_by_seed.get(seed)
    out = [Spread("test accuracy", live.acc, [r["acc"] for r in rows_by_seed.values()],
                  resolution=binomial_se(live.acc, n_test), same_seed=None if own is None else own["acc"])]
    if live.acc_precise is not None:
        out.append(Spread("after precise BN", live.acc_precise, [r["acc_precise"] for r in rows_by_seed.values()],
                          resolution=binomial_se(live.acc_precise, n_test),
                          same_seed=None if own is None else own["acc_precise"]))
    return out


# ------------------------------- the tiny-batch table: all-conv variant and headline rows over seeds

TINY_TABLE = "tiny_batch_runs.csv"           # under data/
TINY_COLUMNS = ["seed", "dataset", "run_epochs", "learning_rate", "norm", "batch_size", "epochs", "steps",
                "acc", "acc_precise", "train_seconds"]
TINY_SEEDS = (0, 1, 2, 3, 4)
TINY_DEFAULTS = {"run_epochs": 2, "learning_rate": 0.001}    # epochs of the batch-2 runs, on both data sets
DATASETS = ("digits", "mnist1d")


def tiny_settings(dataset: str, run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> list[tuple[str, int, int]]:
    """(norm, batch size, epochs) of the tiny-batch table for one data set: the all-conv model (no dense layer)
    with BN at batch 2, 4 and 32 for `run_epochs`, BN at 32 with batch 2's steps (16x the epochs) and GroupNorm at 2;
    on the digits also section 4's CNN at batch 2 with BN, dense LayerNorm, GroupNorm and LayerNorm (the headline;
    MNIST-1D's are in data/mnist1d_runs.csv)."""
    e = run_epochs
    rows = [("allconv_batch", 2, e), ("allconv_batch", 4, e), ("allconv_batch", 32, e), ("allconv_batch", 32, 16 * e),
            ("allconv_group", 2, e)]
    if dataset == "digits":
        rows += [("batch", 2, e), ("dense_ln", 2, e), ("group", 2, e), ("layer", 2, e)]
    return rows


def tiny_dataset(name: str):
    """The data set of the tiny-batch table by name: helpers.data.load_digits or helpers.mnist1d.load_mnist1d."""
    if name == "digits":
        from .data import load_digits
        return load_digits()
    if name == "mnist1d":
        from .mnist1d import load_mnist1d
        return load_mnist1d()
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def tiny_sweep(build, dataset: str, seed: int, run_epochs: int = TINY_DEFAULTS["run_epochs"],
               learning_rate: float = TINY_DEFAULTS["learning_rate"], data=None) -> Sweep:
    """The Sweep that trains the tiny-batch table's rows of `dataset` with the page's `build(norm, seed, input_shape)`."""
    data = data or tiny_dataset(dataset)
    return Sweep(data.x_train, data.y_train, data.x_test, data.y_test, epochs=run_epochs, learning_rate=learning_rate,
                 seed=seed, train_mode=False, build=lambda norm, s: build(norm, s, input_shape=data.x_train.shape[1:]))


def tiny_row(res: RunResult, seed: int, dataset: str, run_epochs: int) -> dict:
    """One RunResult as a row of the tiny-batch table (TINY_COLUMNS)."""
    return {"seed": seed, "dataset": dataset, "run_epochs": run_epochs, "learning_rate": res.learning_rate,
            "norm": res.norm, "batch_size": res.batch_size, "epochs": res.epochs, "steps": res.steps, "acc": res.acc,
            "acc_precise": "" if res.acc_precise is None else res.acc_precise,
            "train_seconds": round(res.train_seconds, 2)}


def committed_tiny_seeds(path=None) -> dict:
    """{(dataset, norm, batch size, epochs): {seed: row}} of the committed tiny-batch table."""
    from .workbook.committed import DATA_DIR, read_csv_rows
    out: dict = {}
    for r in read_csv_rows(path or DATA_DIR / TINY_TABLE, keep_text=("dataset", "norm")):
        out.setdefault((r["dataset"], r["norm"], int(r["batch_size"]), int(r["epochs"])), {})[int(r["seed"])] = r
    return out


def regenerate_tiny(out=None, seeds: Sequence[int] = TINY_SEEDS, command: str = "") -> list[dict]:
    """Train every row of the tiny-batch table (the page's builder, TINY_DEFAULTS) on both data sets for `seeds`;
    write the CSV and its provenance file. Returns the rows."""
    from .workbook.committed import DATA_DIR, write_table
    build = page_builder()
    data = {name: tiny_dataset(name) for name in DATASETS}
    epochs, lr = TINY_DEFAULTS["run_epochs"], TINY_DEFAULTS["learning_rate"]

    def rows_of(unit):
        seed, name = unit
        sweep = tiny_sweep(build, name, seed, epochs, lr, data=data[name])
        return [tiny_row(sweep.run(norm, "iid", b, epochs=e), seed, name, epochs)
                for norm, b, e in tiny_settings(name, epochs)]

    return write_table(out or DATA_DIR / TINY_TABLE, TINY_COLUMNS, [(s, n) for s in seeds for n in DATASETS], rows_of,
                       command=command or "python -m helpers.small_batches tiny", desc="tiny-batch table",
                       seeds=list(seeds), **TINY_DEFAULTS)


def mnist1d_results(build, data, seed: int, mnist1d_epochs: int, learning_rate: float, mode: str = "committed",
                    recomputed=None, names: dict | None = None):
    """Lesson 02's four MNIST-1D rows (mnist1d_settings): the BN row at batch 2 trained now and the others read from
    the committed table, or all four trained now (mode "live", or a seed or setting the table lacks). Each row trained
    now that the table holds is one more sample: judged by the committed seeds' spread with recomputed.add.

    Returns (sweep, {(norm, batch): RunResult}, {(norm, batch): RunResult trained now}, {(norm, batch): {seed: row}}).
    """
    from tqdm.auto import tqdm
    sweep = mnist1d_sweep(build, data, seed, mnist1d_epochs, learning_rate)
    settings = mnist1d_settings(mnist1d_epochs)
    table = committed_mnist1d_seeds(mnist1d_epochs, learning_rate)
    own = {k: rows[seed] for k, rows in table.items() if seed in rows}
    todo = settings if mode == "live" or not own else settings[:1]
    live = {(n, b): sweep.run(n, "iid", b, epochs=e) for n, b, e in tqdm(todo, desc="MNIST-1D runs", unit="run")}
    results = {(n, b): live.get((n, b)) or result_from_row(own[(n, b)]) for n, b, _ in settings}
    for (n, b), r in live.items():
        if recomputed is not None and (n, b) in table:
            recomputed.add(f"MNIST-1D, {(names or {}).get(n, n)} at batch {b}, seed {seed}",
                           row_spreads(r, table[(n, b)], seed, len(data.y_test)))
    return sweep, results, live, table


def headline_rows(tiny: dict, mnist1d_table: dict, norms: Sequence[str] = ("batch", "dense_ln", "group", "layer"),
                  run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> dict:
    """{(data set label, norm): {seed: row}}: section 4's CNN at i.i.d. batch 2 with identical steps, from the tiny-batch
    table (digits) and the MNIST-1D table (the norms it holds)."""
    out = {("digits", n): tiny[("digits", n, 2, run_epochs)] for n in norms if ("digits", n, 2, run_epochs) in tiny}
    out.update({("MNIST-1D", n): mnist1d_table[(n, 2)] for n in norms if (n, 2) in mnist1d_table})
    return out


def allconv_table(tiny: dict, run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> Table:
    """The all-conv rows of the tiny-batch table: per setting and data set, test accuracy and (BN) precise-BN
    accuracy as mean ± sd (min–max, seeds)."""
    from .workbook.spread import spread_summary
    label = {"digits": "digits", "mnist1d": "MNIST-1D"}
    rows = []
    for norm, b, e in tiny_settings("mnist1d", run_epochs):
        row = ["BN" if norm == "allconv_batch" else "GroupNorm", b, e]
        for d in DATASETS:
            seeds = tiny[(d, norm, b, e)].values()
            row += [spread_summary(r["acc"] for r in seeds),
                    spread_summary(r["acc_precise"] for r in seeds) if norm == "allconv_batch" else ""]
        rows.append(row)
    seeds = min(len(v) for k, v in tiny.items() if k[1].startswith("allconv_"))
    return Table(["all-conv model, i.i.d.", "batch", "epochs"] + [f"{label[d]}: {q}" for d in DATASETS
                                                                  for q in ("test acc", "precise BN")],
                 rows, title=f"All-convolutional CNN over {seeds} committed seeds (mean ± sd, min–max)")


def clipping_schedule(variables: dict, schedule: Callable, total_steps: int):
    """A Keras callback that sets each keras.Variable in `variables` ({"rmin", "rmax", "dmax"}) to
    schedule(step, total_steps)[name] before each block of steps, the step read from the optimizer
    (Sweep runs steps_per_execution steps per call, so per-batch callbacks fire once per block)."""
    import keras

    class ClippingSchedule(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            for k, v in schedule(step, total_steps).items():
                variables[k].assign(float(v))

    return ClippingSchedule()


def page_builder():
    """build(norm, seed, input_shape) as lesson 02 writes it on the page (its cell tagged "lesson-code"),
    from the module generated from that cell (helpers/lessons/l02.py), so the committed table and the tests
    train the lesson's own model."""
    from .lessons.l02 import build
    return build


def mnist1d_sweep(build, data, seed: int, mnist1d_epochs: int, learning_rate: float) -> Sweep:
    """The Sweep lesson 02 trains its MNIST-1D rows with: `build(norm, seed, input_shape)` is the page's builder."""
    return Sweep(data.x_train, data.y_train, data.x_test, data.y_test, epochs=mnist1d_epochs,
                 learning_rate=learning_rate, seed=seed, train_mode=False,
                 build=lambda norm, s: build(norm, s, input_shape=data.x_train.shape[1:]))


def regenerate_mnist1d(out=None, seeds: Sequence[int] = MNIST1D_SEEDS, command: str = "") -> list[dict]:
    """Train every row of the MNIST-1D table (the page's builder, the notebook's defaults) for `seeds`;
    write the CSV and its provenance file. Returns the rows."""
    from .mnist1d import load_mnist1d
    from .workbook.committed import DATA_DIR, write_table
    build, data = page_builder(), load_mnist1d()
    epochs, lr = MNIST1D_DEFAULTS["mnist1d_epochs"], MNIST1D_DEFAULTS["learning_rate"]

    def rows_of(seed):
        sweep = mnist1d_sweep(build, data, seed, epochs, lr)
        return [mnist1d_row(sweep.run(norm, "iid", b, epochs=e), seed, epochs) for norm, b, e in mnist1d_settings(epochs)]

    return write_table(out or DATA_DIR / MNIST1D_TABLE, MNIST1D_COLUMNS, seeds, rows_of,
                       command=command or "python -m helpers.small_batches", desc="MNIST-1D table",
                       seeds=list(seeds), **MNIST1D_DEFAULTS)


# ------------------------------------------------------------------- plots


def plot_variance_ratio(iid: Table, grouped: Table | None = None, finding: str | None = None):
    """Measured E[biased var]/var (± 5 standard errors) and the m/(m-1) corrected ratio against m."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    m = np.array(iid.column("batch size m"), float)
    grid = np.geomspace(m.min(), m.max(), 200)
    ax.plot(grid, (grid - 1) / grid, color="0.5", lw=1.2, label="theory (m−1)/m")
    ax.axhline(1.0, color="0.5", ls=":", lw=1.2, label="unbiased: 1")
    ax.errorbar(m, iid.column("E[biased var]/var"), yerr=5 * np.array(iid.column("std error")), fmt="o",
                color="C0", capsize=3, label="measured, biased (÷m), ±5 SE")
    ax.errorbar(m, iid.column("E[corrected var]/var"), yerr=5 * np.array(iid.column("corrected std error")),
                fmt="s", color="C1", capsize=3, label="measured, × m/(m−1)")
    if grouped is not None:
        ax.plot(m, grouped.column("E[biased var]/var"), "^--", color="C3", label="same-class batches, biased")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size m (samples, log scale)")
    ax.set_ylabel("E[batch variance] / true variance")
    ax.legend(loc="lower right")
    return fig


def plot_estimator_spread(iid: Table, finding: str | None = None):
    """Relative standard deviation of the batch mean and batch variance against m (log-log)."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.0, height=4.0)
    m = np.array(iid.column("batch size m"), float)
    ax.plot(m, iid.column("sd of batch mean / sd"), "o-", label="batch mean: sd / population sd")
    ax.plot(m, iid.column("sd of batch var / its mean"), "s-", label="batch variance: sd / its mean")
    ax.plot(m, 1 / np.sqrt(m), color="0.5", ls=":", label="1/√m")
    ax.plot(m, np.sqrt(2 / (m - 1)), color="0.5", ls="--", label="√(2/(m−1)) (normal data)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size m (samples, log scale)")
    ax.set_ylabel("relative spread (log scale)")
    ax.legend()
    return fig


def plot_sweep(results: Sequence[RunResult], batch_sizes: Sequence[int], finding: str | None = None):
    """Test accuracy vs batch size per normalization, i.i.d. batches (BN as trained and after precise BN)."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    by = {r.key: r for r in results}
    for i, norm in enumerate(("batch", "group", "layer", "none")):
        acc = [by[(norm, "iid", b)].acc for b in batch_sizes if (norm, "iid", b) in by]
        bs = [b for b in batch_sizes if (norm, "iid", b) in by]
        ax.plot(bs, acc, "o-", color=f"C{i}", label=NORM_LABELS[norm] + (" (as trained)" if norm == "batch" else ""))
    bs = [b for b in batch_sizes if ("batch", "iid", b) in by]
    ax.plot(bs, [by[("batch", "iid", b)].acc_precise for b in bs], "o--", color="C0", alpha=0.6,
            label="BatchNorm after precise BN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes), [str(b) for b in batch_sizes])
    ax.set_xlabel("batch size (samples per step, i.i.d.)")
    ax.set_ylabel("test accuracy (inference mode)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    return fig


def plot_orders(results: dict, batch_sizes: Sequence[int], finding: str | None = None):
    """BN vs GN test accuracy against batch size for i.i.d. and same-class batches. results: Sweep.results.

    BN is plotted after precise BN, so the curves compare what the weights learned,
    not how far the moving averages had converged.
    """
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    for norm, color in (("batch", "C0"), ("group", "C1")):
        for order, style in (("iid", "o-"), ("grouped", "s--")):
            bs = [b for b in batch_sizes if (norm, order, b) in results]
            acc = [results[(norm, order, b)].acc_precise if norm == "batch" else results[(norm, order, b)].acc
                   for b in bs]
            label = NORM_LABELS[norm] + (" (precise BN)" if norm == "batch" else "")
            ax.plot(bs, acc, style, color=color, label=f"{label}, {ORDER_LABELS[order]}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes), [str(b) for b in batch_sizes])
    ax.set_xlabel("batch size (samples per step)")
    ax.set_ylabel("test accuracy (inference mode)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center right")
    return fig


# ------------------------------------------------------------------ widget


def svg_histogram(values: np.ndarray, *, bins: int, value_range: tuple[float, float], title: str, xlabel: str,
                  ylabel: str, markers: Sequence[tuple[float, str, str]] = (), color: str = "#1f77b4",
                  width: int = 640, height: int = 250) -> str:
    """A histogram of values (N,) as an SVG string: bars, axes with ticks and labels, a title,
    and vertical markers [(x, colour, legend text)].

    Drawn by hand because the widget must redraw in well under 0.3 s even on a busy
    machine; rendering a matplotlib figure to PNG takes 0.1–1 s there.
    """
    import html
    lo, hi = value_range
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    left, right, top, bottom = 60, 16, 34, 44
    pw, ph = width - left - right, height - top - bottom
    ymax = max(int(counts.max()), 1)
    sx = lambda v: left + (v - lo) / (hi - lo) * pw  # noqa: E731
    sy = lambda c: top + ph - c / ymax * ph  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold" font-size="12">'
           f'{html.escape(title)}</text>']
    for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
        if c:
            out.append(f'<rect x="{sx(e0):.1f}" y="{sy(c):.1f}" width="{sx(e1) - sx(e0):.1f}" '
                       f'height="{top + ph - sy(c):.1f}" fill="{color}" fill-opacity="0.75"/>')
    out.append(f'<path d="M{left},{top} V{top + ph} H{left + pw}" stroke="black" fill="none"/>')
    for t in np.linspace(lo, hi, 5):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="black"/>'
                   f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:g}</text>')
    for c in np.linspace(0, ymax, 3):
        out.append(f'<text x="{left - 6}" y="{sy(c) + 4:.1f}" text-anchor="end">{int(c):,}</text>')
    for i, (x, col, label) in enumerate(markers):
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="{col}" '
                   f'stroke-width="2" stroke-dasharray="{"none" if i == 0 else "5,3"}"/>'
                   f'<text x="{left + pw - 4}" y="{top + 14 + 14 * i}" text-anchor="end" fill="{col}">'
                   f'{html.escape(label)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>'
               f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text></svg>')
    return "".join(out)


def estimator_panel(values: np.ndarray, labels: np.ndarray, results: Sequence[RunResult], batch_size: int,
                    order: str, trials: int = 20_000, seed: int = 0) -> Table:
    """Widget function: histogram of the batch variance at this batch size and order (live Monte
    Carlo, `trials` draws), plus the sweep table with the matching rows highlighted.

    values, labels: (N,). Displays the histogram (SVG) and returns the Table.
    """
    from IPython.display import SVG, display
    rng = np.random.default_rng(seed)
    true_var = np.asarray(values, np.float64).var()
    _, variances = estimator_trials(values, labels, batch_size, trials, rng, order)
    ratio = variances / true_var
    m = batch_size
    display(SVG(svg_histogram(
        ratio, bins=60, value_range=(0.0, 4.0),
        title=f"{ORDER_LABELS[order]} batches of {m}: E[batch var] = {ratio.mean():.2f} × true "
              f"(i.i.d. theory {(m - 1) / m:.2f})",
        xlabel="batch variance / true variance (clipped at 4)", ylabel=f"batches (of {trials:,})",
        markers=[(ratio.mean(), "black", f"measured mean {ratio.mean():.3f}"),
                 ((m - 1) / m, "#777777", f"(m−1)/m = {(m - 1) / m:.3f}"),
                 (1.0, "#bbbbbb", "true variance = 1")],
        color="#1f77b4" if order == "iid" else "#d62728")))
    table = sweep_table(results, highlight=(order, m), title=f"Sweep rows for {ORDER_LABELS[order]} batches of {m}"
                        + ("" if any((r.order, r.batch_size) == (order, m) for r in results)
                           else " (not in the sweep)"))
    return table  # ipywidgets.interactive displays the returned table under the histogram


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.small_batches [--seeds 0,1,2] [--out data/mnist1d_runs.csv]`: regenerate lesson 02's
    MNIST-1D table; `python -m helpers.small_batches tiny [--seeds ...] [--out data/tiny_batch_runs.csv]`: its
    tiny-batch table (all-conv variant and headline rows; see data/README.md)."""
    import sys
    from .workbook.committed import regenerate_main
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tiny"]:
        return regenerate_main(argv[1:], prog="helpers.small_batches tiny", description=_main.__doc__,
                               default_seeds=TINY_SEEDS, table_name=TINY_TABLE, regenerate=regenerate_tiny)
    return regenerate_main(argv, prog="helpers.small_batches", description=_main.__doc__, default_seeds=MNIST1D_SEEDS,
                           table_name=MNIST1D_TABLE, regenerate=regenerate_mnist1d)


if __name__ == "__main__":
    raise SystemExit(_main())
