"""train(): model.fit with one progress bar per run (not Keras's per-epoch log),
the history returned as a table, and helpers to score a model in either BN mode.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .workbook.frameworks import keras, tf
from .workbook.tables import Table


def progress_callback(total_epochs: int, desc: str, enabled: bool = True):
    """A Keras callback advancing one tqdm bar per epoch (cheap: no per-batch work)."""
    return EpochBar(total_epochs, desc, enabled)


class EpochBar(keras.callbacks.Callback):
    """progress_callback's callback: one tqdm bar, advanced once per epoch."""

    def __init__(self, total_epochs: int, desc: str, enabled: bool = True):
        super().__init__()
        self.total_epochs, self.desc, self.enabled = total_epochs, desc, enabled

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.total_epochs, desc=self.desc, unit="epoch", leave=True, disable=not self.enabled)

    def on_epoch_end(self, epoch, logs=None):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


@dataclass
class History:
    """What train() returns. metrics: name -> per-epoch list; seconds: wall time of fit."""
    metrics: dict[str, list[float]]
    seconds: float
    epochs: int
    steps_per_epoch: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def table(self) -> Table:
        names = list(self.metrics)
        rows = [[e + 1] + [self.metrics[n][e] for n in names] for e in range(len(self.metrics[names[0]]))] if names else []
        return Table(["epoch"] + names, rows)

    def final(self, name: str) -> float:
        return float(self.metrics[name][-1])

    def _repr_html_(self) -> str:
        return self.table._repr_html_()


def train(model, x, y=None, *, epochs: int, batch_size: int | None = None, validation_data=None,
          desc: str = "training", callbacks=(), progress: bool = True, **fit_kwargs) -> History:
    """Run model.fit silently with one tqdm bar; return a History.

    x, y: arrays, or x a tf.data.Dataset (then y=None and batch_size=None).
    Extra keywords go to fit (shuffle, steps_per_epoch, sample_weight, ...).
    """
    cbs = [progress_callback(epochs, desc, enabled=progress), *callbacks]
    if y is None and not isinstance(x, np.ndarray):
        fit_kwargs.setdefault("shuffle", False)  # a dataset brings its own order
    start = time.perf_counter()
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                     callbacks=cbs, verbose=0, **fit_kwargs)
    seconds = time.perf_counter() - start
    metrics = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    steps = hist.params.get("steps") if hasattr(hist, "params") else None
    return History(metrics=metrics, seconds=seconds, epochs=epochs, steps_per_epoch=steps)


def steps_per_call(steps_per_epoch: int, cap: int = 100, every: int | None = None) -> int:
    """A value for compile(steps_per_execution=...): the largest k <= cap that divides
    steps_per_epoch (and `every`, when given), so fit's blocks of k steps tile every epoch.

    Keras runs whole blocks of steps_per_execution steps within each fit epoch and fires
    per-batch callbacks once per block. A block that does not divide the epoch overruns
    into the next epoch's batches, so epochs end at other steps, and when a tf.data input
    of known length runs out before the last epoch Keras restarts it: more steps are
    trained. A divisor takes exactly the same steps in the same order as k = 1.
    every: a per-batch callback's period (e.g. a tracker measuring every 15 steps), so
    that each multiple of it ends a block. Returns 1 when nothing larger fits.
    """
    if steps_per_epoch < 1 or cap < 1:
        raise ValueError(f"steps_per_epoch and cap must be >= 1, got {steps_per_epoch} and {cap}")
    return max(k for k in range(1, min(cap, steps_per_epoch) + 1)
               if steps_per_epoch % k == 0 and (every is None or every % k == 0))


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled_call(model, training: bool, input_shape: tuple | None = None):
    """model(x, training=training) wrapped in one tf.function, cached per model, mode and
    input shape (traced once, kept while the model lives). input_shape: the shape of one
    sample, e.g. (T, C); given, the function accepts any batch size without retracing.
    """
    fns = _COMPILED.setdefault(model, {})
    key = (bool(training), None if input_shape is None else tuple(input_shape))
    if key not in fns:
        call = lambda x: model(x, training=bool(training))  # noqa: E731
        if input_shape is None:
            fns[key] = tf.function(call, reduce_retracing=True, autograph=False)
        else:
            spec = tf.TensorSpec((None,) + tuple(input_shape), tf.float32)
            fns[key] = tf.function(call, input_signature=[spec], autograph=False)
    return fns[key]


def predict_proba(model, x, *, training: bool = False, batch_size: int = 512, batches=None,
                  compiled: bool = False, keep_statistics: bool = True) -> np.ndarray:
    """Model outputs with BN in inference (training=False) or training mode.

    In training mode the batch statistics depend on how x is cut into batches:
    consecutive chunks of `batch_size` by default, or `batches`, a list of index
    arrays (then the outputs come in the order of np.concatenate(batches)).
    compiled=True calls the model through compiled_call (fast for many small batches).
    Beware: in Keras 3 a call with training=True also *updates* every BN layer's
    moving statistics (outside fit too); keep_statistics=True (default) restores
    them (batchnorm.preserved_bn_state), so scoring leaves the model unchanged;
    False leaves the model as Keras leaves it.
    """
    import contextlib
    from .batchnorm import preserved_bn_state
    x = np.asarray(x) if not hasattr(x, "shape") else x
    if batches is None:
        batches = [slice(i, i + batch_size) for i in range(0, len(x), batch_size)]
    fn = (compiled_call(model, training, tuple(x.shape[1:])) if compiled
          else (lambda chunk: model(chunk, training=training)))
    guard = preserved_bn_state(model) if keep_statistics else contextlib.nullcontext()
    with guard:
        outs = [np.asarray(fn(np.asarray(x[b], np.float32) if compiled else x[b])) for b in batches]
    return np.concatenate(outs, axis=0)


def accuracy(model, x, y, *, training: bool = False, batch_size: int = 512, batches=None,
             compiled: bool = False) -> float:
    """Classification accuracy: argmax of a softmax output, or P > 0.5 for a single sigmoid unit.

    The workbook's one implementation, for both BN modes; see predict_proba for
    `training`, `batch_size`, `batches` (a batch order, e.g. same-class batches;
    only the samples in them are scored) and `compiled`. The model is left unchanged.
    """
    pred = predict_proba(model, x, training=training, batch_size=batch_size, batches=batches, compiled=compiled)
    y = np.asarray(y)
    if batches is not None:
        y = y[np.concatenate([np.arange(len(y))[b] for b in batches])]
    if pred.shape[-1] == 1:
        return float(np.mean((pred[..., 0] > 0.5) == (y.reshape(pred.shape[:-1]) > 0.5)))
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def epoch_log(x=None, y=None, *, batch_size: int = 2048):
    """A callback recording, per epoch, the seconds spent training and (if x, y
    are given) the loss on (x, y) at the end of the epoch, in inference mode.

    The loss is computed with one direct model call per `batch_size` chunk, not
    model.evaluate, so it adds milliseconds, and that time is excluded from
    `seconds`. Read .seconds and .loss (lists, one entry per epoch) after fit.
    """

    return EpochLog(x, y, batch_size=batch_size)


class EpochLog(keras.callbacks.Callback):
    """epoch_log's callback: .seconds and .loss, one entry per epoch."""

    def __init__(self, x=None, y=None, *, batch_size: int = 2048):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.seconds, self.loss = [], []

    def on_train_begin(self, logs=None):
        self._loss_fn = keras.losses.get(self.model.loss)

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)
        if self.x is not None:
            pred = predict_proba(self.model, self.x, batch_size=self.batch_size)
            self.loss.append(float(np.mean(self._loss_fn(self.y, pred))))
