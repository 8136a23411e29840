"""DiagnoseCallback: the BN check and a loss-spike watch inside the user's own `model.fit`.

    from helpers.diagnose.callback import DiagnoseCallback
    cb = DiagnoseCallback(x_train, y_train, validation_data=(x_val, y_val))
    model.fit(x_train, y_train, ..., callbacks=[cb])
    cb.results        # one dict per BN check: epoch, codes, metric_as_stored, metric_recomputed, recomputed
    cb.spikes         # one dict per flagged batch: epoch, batch, step, loss, reference, positives, ...
    cb.batch_losses   # the true per-batch losses (float64 array, one per train_function call)

Two jobs:

BN check. At the end of training (and every `every_n_epochs` epochs when given) it runs
`diagnose(model, arrays, only=["bn"], progress=False, plots=False)` on at most `max_examples`
training and validation examples. With recompute="if_better" it then calls `diag.apply_fix()`,
which assigns the recomputed BN statistics to the in-memory model only when recomputing improves
the held-out metric beyond its noise; recompute="never" only reports. A check that raises is
recorded in `results` (with its "error") and warned about: a diagnosis never ends a fit.

Spike watch. Keras 3 logs, per batch, logs["loss"] = the running mean of the epoch so far, each
batch weighted by its number of samples (the loss tracker's sample_weight is the batch size,
keras/src/backend/tensorflow/trainer.py TensorFlowTrainer.train_step). The true batch loss is
undone from it as lesson 06's undo_running_mean (helpers.lessons.l06) does, l_i = (S_i - S_(i-1)) / n_i with
S = running mean x samples so far. Spikes follow the project's one rule, helpers.spikes.flags.flag_spikes
(loss >= spike_ratio x median of the previous spike_window batch losses AND loss - median >= spike_min_jump,
no reference before MIN_POINTS losses), computed incrementally over the whole fit (the window runs
across epoch boundaries, as flag_spikes on the concatenated sequence does).

How the callback knows each batch's size and positives (it never sees the batch). Keras 3.15's
TensorFlow `fit` builds its train function *before* it calls the callbacks' on_train_begin
(keras/src/backend/tensorflow/trainer.py, fit: `self.make_train_function()` then
`callbacks.on_train_begin()`, lines 388-389) and looks `self.train_function` up afresh at every step
(`logs = self.train_function(iterator)`, line 399). `make_train_function(force=True)` (line 254)
rebuilds it from `self.train_step`, an ordinary attribute look-up, so an instance attribute wins over
the class's method. In on_train_begin this callback therefore sets `model.train_step` to a wrapper that
calls the original step unchanged and also adds [labels >= 0.5, samples, steps] to a float64
tf.Variable (a running total the callback reads after each call), then forces the rebuild; fit's loop
uses the rebuilt function from the first step on. The reads line up with the calls because a callback
that defines on_train_batch_end turns off CallbackList's asynchronous batch-end dispatch
(keras/src/callbacks/callback_list.py, _configure_async_dispatch, lines 59-84). The logs are left
untouched (an extra log key would change what fit reports at the end of an epoch:
`_get_metrics_result_or_logs` returns the metrics only when the keys match, keras/src/trainers/trainer.py
line 1060). on_train_end deletes the wrapper and puts back the train function fit had built, so a later
fit or train_on_batch runs the original step.
The cost: one retrace of the train function per fit, and one small variable read per call.

    - sample weights, class_weight: the sizes are samples (what Keras weights the running mean by), and
      positives count labels >= 0.5 whatever their weight; the batch loss is Keras's weighted loss.
    - positives are counted when the model has one label tensor (binary (N,), (N, 1), per-timestep
      (N, T) or (N, T, 1)); for several outputs or no labels they are None. Integer class labels are
      counted too (labels >= 1), which means little beyond binary tasks.
    - steps_per_execution > 1: fit calls the callbacks once per train_function call, i.e. once per
      block of steps_per_execution batches, with the logs of the block's last batch. Every entry is then
      a block: its loss is the sample-weighted mean loss over the block's batches, its positives and
      samples are the block's totals, and spikes are flagged among block losses (a spike in one batch is
      diluted by the others). "batch" is the block's last batch index within the epoch (as fit passes
      it); "step" is the global index of the block's last batch, counted exactly (the last partial block
      included) since the wrapper counts the steps it runs.
    - a multi-replica distribution strategy (num_replicas_in_sync > 1), or a Keras backend other than
      TensorFlow: train_step is not wrapped, positives are None and the batches are assumed equal in
      size (exact except for a last partial batch).
    - a custom train_step whose logs["loss"] is not Keras's running mean (e.g. it returns the raw batch
      loss): the recovered values are wrong; give such a model a loss tracker as helpers.spikes.inspector.InspectedModel does.
    - if fit raises, on_train_end is not called and the wrapper stays on the model (harmless: the same
      step plus one variable update); call `callback.restore()` to remove it.
"""
from __future__ import annotations

import math
import warnings
from collections import deque

import numpy as np

import keras

RECOMPUTE = ("if_better", "never")


class DiagnoseCallback(keras.callbacks.Callback):
    """BN check at the end of fit (and every `every_n_epochs`), plus a per-batch loss-spike watch.

    x_train, y_train, validation_data=(x_val, y_val[, w]): the arrays the BN check uses (at most
    `max_examples` of each, drawn with a fixed seed); without them only the spike watch runs.
    recompute: "if_better" assigns recomputed BN statistics when they improve the held-out metric
    beyond its noise (diag.apply_fix()); "never" reports only.
    watch_spikes, spike_ratio, spike_min_jump, spike_window: the spike rule (helpers.spikes.flags).
    batch_size: the batch size of your fit, passed to diagnose (its small-batch-bias test compares the
    stored variance with (m-1)/m); None: diagnose's default.
    verbose: 0 silent, 1 one line per BN check and a spike summary at the end, 2 also one line per spike.

    After (or during) fit, for the latest fit: .results (list of dicts: epoch (0-based, the last completed),
    codes, metric_as_stored, metric_recomputed, recomputed, and improves, worst_layer or error),
    .spikes (list of dicts: epoch, batch, step (global, 0-based), loss, reference (the median), ratio,
    positives, samples), .batch_losses, .batch_sizes, .batch_positives (NaN where unknown), .batch_epochs
    (arrays, one entry per train_function call: per batch when steps_per_execution is 1).
    """

    def __init__(self, x_train=None, y_train=None, validation_data=None, *, every_n_epochs: int | None = None,
                 recompute: str = "if_better", watch_spikes: bool = True, spike_ratio: float = 3.0,
                 spike_min_jump: float = 0.02, spike_window: int = 10, max_examples: int = 2048,
                 batch_size: int | None = None, verbose: int = 1):
        super().__init__()
        if recompute not in RECOMPUTE:
            raise ValueError(f"recompute: expected one of {RECOMPUTE}, got {recompute!r}")
        if every_n_epochs is not None and (not isinstance(every_n_epochs, (int, np.integer))
                                           or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs: expected a positive integer or None, got {every_n_epochs!r}")
        if (x_train is None) != (y_train is None):
            raise ValueError("x_train and y_train: expected both or neither")
        if x_train is not None and validation_data is None:
            raise ValueError("validation_data: expected (x_val, y_val) for the BN check: recomputed statistics "
                             "are kept only when they improve the held-out metric")
        if validation_data is not None and x_train is None:
            raise ValueError("x_train, y_train: expected the training arrays with validation_data (the BN "
                             "statistics are recomputed from them)")
        if validation_data is not None and (not isinstance(validation_data, (tuple, list))
                                            or len(validation_data) not in (2, 3)):
            raise ValueError("validation_data: expected (x_val, y_val) or (x_val, y_val, sample_weight)")
        if every_n_epochs is not None and x_train is None:
            raise ValueError("every_n_epochs: the BN check needs x_train, y_train and validation_data")
        if not spike_window >= 1:
            raise ValueError(f"spike_window: expected >= 1, got {spike_window!r}")
        if not max_examples >= 2:
            raise ValueError(f"max_examples: expected >= 2, got {max_examples!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 2):
            raise ValueError(f"batch_size: expected an integer >= 2 or None, got {batch_size!r}")
        self.x_train, self.y_train = x_train, y_train
        self.validation_data = validation_data
        self.every_n_epochs = None if every_n_epochs is None else int(every_n_epochs)
        self.recompute = recompute
        self.watch_spikes = bool(watch_spikes)
        self.spike_ratio = float(spike_ratio)
        self.spike_min_jump = float(spike_min_jump)
        self.spike_window = int(spike_window)
        self.max_examples = int(max_examples)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.verbose = int(verbose)

        self.results: list[dict] = []
        self.spikes: list[dict] = []
        self.batch_losses = np.zeros(0)
        self.batch_sizes = np.zeros(0)
        self.batch_positives = np.zeros(0)
        self.batch_epochs = np.zeros(0, int)
        self._arrays = None
        self._wrapped = None     # (model, had an instance train_step, its value, the train function fit built)
        self._counter = None

    # ------------------------------------------------------------------ BN check

    @property
    def bn_check(self) -> bool:
        return self.x_train is not None

    def _check_arrays(self) -> dict:
        if self._arrays is None:
            xv, yv = self.validation_data[0], self.validation_data[1]
            self._arrays = {"x_train": _subsample(self.x_train, self.max_examples),
                            "y_train": _subsample(self.y_train, self.max_examples),
                            "x_test": _subsample(xv, self.max_examples),
                            "y_test": _subsample(yv, self.max_examples)}
        return self._arrays

    def run_bn_check(self, epoch: int) -> dict:
        """One BN check now (epoch: the last completed epoch, 0-based); appends to and returns .results[-1]."""
        from . import diagnose  # lazily: the package imports this module's siblings, not the reverse

        row = {"epoch": int(epoch), "codes": [], "metric_as_stored": None, "metric_recomputed": None,
               "recomputed": False}
        try:
            extra = {} if self.batch_size is None else {"batch_size": self.batch_size}
            diag = diagnose(self.model, self._check_arrays(), only=["bn"], progress=False, plots=False, **extra)
            stats = (diag.report or {}).get("bn_statistics") or {}
            row.update(codes=list(diag.codes), metric_as_stored=_num(stats.get("metric_as_stored")),
                       metric_recomputed=_num(stats.get("metric_recomputed")), improves=stats.get("improves"),
                       worst_layer=stats.get("worst_layer"))
            if self.recompute == "if_better":
                row["recomputed"] = bool(diag.apply_fix())
        except Exception as exc:  # a diagnosis never ends the user's fit
            row["error"] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"DiagnoseCallback: the BN check after epoch {epoch + 1} failed: {row['error']}",
                          RuntimeWarning, stacklevel=2)
        self.results.append(row)
        if self.verbose:
            print(_check_line(row, self.recompute))
        return row

    # ------------------------------------------------------------------ spike watch: the train_step wrapper

    def _wrap_train_step(self):
        import tensorflow as tf

        model = self.model
        if (keras.backend.backend() != "tensorflow" or not hasattr(model, "make_train_function")
                or model.distribute_strategy.num_replicas_in_sync > 1):
            return False
        counter = tf.Variable(tf.zeros(3, tf.float64), trainable=False, name="diagnose_callback_counts")
        had_own = "train_step" in vars(model)
        original_step = model.train_step
        state = {"positives": None}  # decided when the step is traced: one label tensor or not

        def train_step(data):
            logs = original_step(data)
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            first = next(t for t in keras.tree.flatten(x) if t is not None)
            n = tf.cast(tf.shape(first)[0], tf.float64)
            labels = [t for t in keras.tree.flatten(y) if t is not None] if y is not None else []
            if len(labels) == 1:
                state["positives"] = True
                positives = tf.reduce_sum(tf.cast(tf.cast(labels[0], tf.float32) >= 0.5, tf.float64))
            else:
                state["positives"] = False
                positives = tf.constant(0.0, tf.float64)
            counter.assign_add(tf.stack([positives, n, tf.constant(1.0, tf.float64)]))
            return logs

        built = model.train_function
        object.__setattr__(model, "train_step", train_step)
        self._wrapped = (model, had_own, original_step, built)
        model.make_train_function(force=True)
        self._counter, self._count_state = counter, state
        return True

    def restore(self):
        """Removes the train_step wrapper and puts back the train function fit had built (idempotent)."""
        if self._wrapped is None:
            return
        model, had_own, original_step, built = self._wrapped
        if had_own:
            object.__setattr__(model, "train_step", original_step)
        else:
            object.__delattr__(model, "train_step")
        model.train_function = built
        self._wrapped = None

    # ------------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        from ..spikes.flags import MIN_POINTS

        self._min_points = MIN_POINTS
        self._losses, self._sizes, self._positives, self._epochs = [], [], [], []
        self._recent = deque(maxlen=self.spike_window)
        self.spikes, self.results = [], []
        self._step = 0
        self._last_checked = None
        self._epoch = -1
        self._counter = None
        self._count_state = {"positives": None}
        self._exact = self.watch_spikes and self._wrap_train_step()
        self._seen = np.zeros(3)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._running_prev = 0.0   # running mean after the previous call this epoch
        self._samples_prev = 0.0   # samples so far this epoch (or calls, when sizes are unknown)

    def on_train_batch_end(self, batch, logs=None):
        if not self.watch_spikes or not logs or "loss" not in logs:
            return
        running = float(logs["loss"])
        if self._exact:
            total = self._counter.numpy()
            positives, n, steps = (float(v) for v in total - self._seen)
            self._seen = total
            positives = positives if self._count_state["positives"] else None
        else:
            spe = int(getattr(self.model, "steps_per_execution", 1) or 1)
            positives, n, steps = None, 1.0, float(spe)
        samples = self._samples_prev + n
        loss = (running * samples - self._running_prev * self._samples_prev) / n
        self._running_prev, self._samples_prev = running, samples
        self._step += int(round(steps))

        self._losses.append(loss)
        self._sizes.append(n if self._exact else math.nan)
        self._positives.append(math.nan if positives is None else positives)
        self._epochs.append(self._epoch)
        flagged, reference = self._flag(loss)
        if flagged:
            spike = {"epoch": self._epoch, "batch": int(batch), "step": self._step - 1, "loss": loss,
                     "reference": reference, "ratio": loss / reference,
                     "positives": None if positives is None else int(round(positives)),
                     "samples": int(round(n)) if self._exact else None}
            self.spikes.append(spike)
            if self.verbose >= 2:
                print(_spike_line(spike))

    def _flag(self, loss: float) -> tuple[bool, float | None]:
        """flag_spikes' rule for the newest value, against the previous `spike_window` values."""
        k = len(self._losses) - 1   # index of `loss` (already appended)
        reference = float(np.median(np.asarray(self._recent, np.float64))) if k >= self._min_points else None
        self._recent.append(loss)
        if reference is None or not reference > 0:
            return False, reference
        ratio = loss / reference
        return bool(math.isfinite(ratio) and ratio >= self.spike_ratio
                    and loss - reference >= self.spike_min_jump), reference

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._publish()
        if self.bn_check and self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self._last_checked = int(epoch)
            self.run_bn_check(int(epoch))

    def on_train_end(self, logs=None):
        self.restore()
        self._publish()
        if self.watch_spikes and self.verbose:
            steps = ", ".join(str(s["step"]) for s in self.spikes[:10]) + (" ..." if len(self.spikes) > 10 else "")
            print(f"DiagnoseCallback: {len(self.spikes)} loss spike(s) in {len(self.batch_losses)} batches"
                  + (f" (steps {steps})" if self.spikes else ""))
        if self.bn_check and self._epoch >= 0 and self._last_checked != self._epoch:
            self._last_checked = self._epoch
            self.run_bn_check(self._epoch)

    def _publish(self):
        self.batch_losses = np.asarray(self._losses, np.float64)
        self.batch_sizes = np.asarray(self._sizes, np.float64)
        self.batch_positives = np.asarray(self._positives, np.float64)
        self.batch_epochs = np.asarray(self._epochs, int)


# ---------------------------------------------------------------------- helpers


def incremental_flags(values, *, window: int = 10, ratio: float = 3.0, min_jump: float = 0.02) -> np.ndarray:
    """flag_spikes(values, ...) computed one value at a time, as the callback does (for the tests)."""
    cb = DiagnoseCallback(spike_ratio=ratio, spike_min_jump=min_jump, spike_window=window, verbose=0)
    from ..spikes.flags import MIN_POINTS
    cb._min_points, cb._recent, cb._losses = MIN_POINTS, deque(maxlen=window), []
    out = []
    for v in np.asarray(values, np.float64):
        cb._losses.append(float(v))
        out.append(cb._flag(float(v))[0])
    return np.asarray(out, bool)


def _subsample(a, n: int, seed: int = 0):
    """At most n examples of a (array, or dict / list / tuple of arrays with one first axis), fixed seed."""
    arrays = keras.tree.flatten(a)
    length = len(arrays[0])
    if length <= n:
        return a
    idx = np.sort(np.random.default_rng(seed).choice(length, size=n, replace=False))
    return keras.tree.map_structure(lambda t: np.asarray(t)[idx], a)


def _num(v):
    return None if v is None else float(v)


def _check_line(row: dict, recompute: str) -> str:
    head = f"DiagnoseCallback, BN check after epoch {row['epoch'] + 1}: "
    if "error" in row:
        return head + f"failed ({row['error']})"
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    line = head + (", ".join(row["codes"]) or "no findings")
    line += f"; held-out metric {fmt(row['metric_as_stored'])} as stored, {fmt(row['metric_recomputed'])} recomputed"
    if recompute == "never":
        return line + " (recompute='never': statistics kept)"
    return line + ("; recomputed statistics assigned" if row["recomputed"] else "; statistics kept")


def _spike_line(s: dict) -> str:
    pos = "" if s["positives"] is None else f", {s['positives']} positive label(s) in {s['samples']} samples"
    return (f"DiagnoseCallback: loss spike at epoch {s['epoch'] + 1}, batch {s['batch']} (step {s['step']}): "
            f"{s['loss']:.4g} = {s['ratio']:.1f} x the median {s['reference']:.4g}{pos}")
