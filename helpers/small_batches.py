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
    clipping_schedule(...)               a Keras callback that moves renorm's clipping bounds on a schedule

Lesson 02's committed tables are in helpers.results.small_batch_runs, its figures and widget in
helpers.small_batch_plots.

Array shapes are given in each docstring. Importing this module loads TensorFlow (helpers.workbook.frameworks)
and does nothing else.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .workbook.frameworks import keras, tf  # first: sets TensorFlow's environment
from .batchnorm import batch_statistics, bn_layers, precise_bn, preserved_bn_state
from .data import epoch_batches
from .models import sweep_cnn
from .training import accuracy
from .workbook.tables import Table

ORDERS = ("iid", "grouped")
ORDER_LABELS = {"iid": "i.i.d.", "grouped": "correlated (same class)"}
NORM_LABELS = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm", "none": "no norm",
               "dense_ln": "BN in the convs, LayerNorm after the dense layer",
               "renorm": "Batch Renorm", "renorm_clipped": "Batch Renorm (clipped)",
               "renorm_scheduled": "Batch Renorm (paper's schedule)",
               "allconv_batch": "all-conv, BatchNorm", "allconv_group": "all-conv, GroupNorm"}

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
    rng = np.random.default_rng(seed)
    per_epoch = [epoch_batches(y, batch_size, order, rng, drop_remainder=True) for _ in range(epochs)]
    steps = min(len(b) for b in per_epoch)
    idx = np.concatenate([np.concatenate(b[:steps]) for b in per_epoch])
    return tf.data.Dataset.from_tensor_slices((x[idx], y[idx])).batch(batch_size), steps


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


# ------------------------------------------------ Batch Renorm's clipping on a schedule


def clipping_schedule(variables: dict, schedule: Callable, total_steps: int):
    """A Keras callback that sets each keras.Variable in `variables` ({"rmin", "rmax", "dmax"}) to
    schedule(step, total_steps)[name] before each block of steps, the step read from the optimizer
    (Sweep runs steps_per_execution steps per call, so per-batch callbacks fire once per block)."""

    return ClippingSchedule(variables, schedule, total_steps)


class ClippingSchedule(keras.callbacks.Callback):
    """clipping_schedule's callback."""

    def __init__(self, variables: dict, schedule: Callable, total_steps: int):
        super().__init__()
        self.variables, self.schedule, self.total_steps = variables, schedule, total_steps

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        for k, v in self.schedule(step, self.total_steps).items():
            self.variables[k].assign(float(v))
