"""Seeing the true per-batch loss (lesson 06).

    undo_running_mean(...)   per-batch values from Keras 3's running mean in logs["loss"]
    SpikeInspector(...)      Keras callback: true per-batch losses, gradient norms, a fixed monitoring set
    inspected_model_class()  a keras.Model whose train_step also logs grad_norm and the raw batch loss
    inspected_tagger(...)    the LSTM tagger built on it
    loss_breakdown(...)      which series / timesteps carry a batch's weighted loss
    fixed_model_batch_losses(...)  one fixed model on many random batches: composition alone
"""
from __future__ import annotations

import numpy as np

from .. import imbalanced as imb


def undo_running_mean(running: np.ndarray, batch_sizes: np.ndarray) -> np.ndarray:
    """Per-batch values from Keras 3's running means within one epoch.

    running[i] = Σ_{j≤i} n_j·l_j / Σ_{j≤i} n_j (Keras weights each batch's loss
    by its number of samples), so l_i = (S_i − S_{i−1}) / n_i with S = running·cumsum(n).
    running, batch_sizes: (B,) for one epoch. Returns (B,).
    """
    m = np.asarray(running, np.float64)
    n = np.asarray(batch_sizes, np.float64)
    s = m * np.cumsum(n)
    return np.diff(np.r_[0.0, s]) / n


# ---------------------------------------------------------------- callback


def SpikeInspector(monitor_x, monitor_y, monitor_w, *, every: int = 2,
                   batch_sizes_per_epoch: list[int] | None = None, loss_fn=None):
    """Keras callback recording, for every batch, Keras's logged `loss` (the
    running mean of the epoch so far), the true batch loss recovered from it,
    `grad_norm` and `raw_batch_loss` if the model logs them (see
    `inspected_tagger`; used to verify the recovery), and, every
    `every` steps, the loss on a fixed monitoring set.

    monitor_x (M, T, 1), monitor_y (M, T), monitor_w (M, T): the fixed set and
    its weights; the monitored loss is mean(w·l) (Keras's reduction) unless
    `loss_fn(y (M,T,1), p (M,T,1)) -> scalar` is given.
    batch_sizes_per_epoch: samples per batch in one epoch (default: all equal).

    After fit: .keras_loss, .batch_loss, .grad_norm, .raw_batch_loss (per step, arrays),
    .monitor_steps and .monitor_loss (arrays).
    """
    import keras
    import tensorflow as tf

    xm = tf.constant(monitor_x, tf.float32)
    ym = tf.constant(np.asarray(monitor_y, np.float32)[..., None])
    wm = tf.constant(np.asarray(monitor_w, np.float32))

    class _SpikeInspector(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.every = int(every)
            self.keras_loss: list[float] = []
            self.batch_loss: list[float] = []
            self.grad_norm: list[float] = []
            self.raw_batch_loss: list[float] = []
            self.monitor_steps: list[int] = []
            self.monitor_loss: list[float] = []
            self._epoch_running: list[float] = []
            self._step = 0

        def on_train_begin(self, logs=None):
            model = self.model

            @tf.function(reduce_retracing=True)
            def monitored():
                p = model(xm, training=False)
                if loss_fn is not None:
                    return loss_fn(ym, p)
                pc = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
                l = -(ym * tf.math.log(pc) + (1 - ym) * tf.math.log(1 - pc))[..., 0]
                return tf.reduce_mean(wm * l)
            self._monitored = monitored
            self._record_monitor()

        def _record_monitor(self):
            self.monitor_steps.append(self._step)
            self.monitor_loss.append(float(self._monitored()))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_running = []

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            running = float(logs["loss"])
            self.keras_loss.append(running)
            self._epoch_running.append(running)
            k = len(self._epoch_running)
            if batch_sizes_per_epoch is not None and k <= len(batch_sizes_per_epoch):
                n_prev = float(sum(batch_sizes_per_epoch[:k - 1]))
                n_k = float(batch_sizes_per_epoch[k - 1])
            else:
                n_prev, n_k = float(k - 1), 1.0
            prev = self._epoch_running[-2] if k > 1 else 0.0
            self.batch_loss.append((running * (n_prev + n_k) - prev * n_prev) / n_k)
            if "grad_norm" in logs:
                self.grad_norm.append(float(logs["grad_norm"]))
            if "raw_batch_loss" in logs:
                self.raw_batch_loss.append(float(logs["raw_batch_loss"]))
            self._step += 1
            if self._step % self.every == 0:
                self._record_monitor()

        def on_train_end(self, logs=None):
            for name in ("keras_loss", "batch_loss", "grad_norm", "raw_batch_loss", "monitor_steps",
                         "monitor_loss"):
                setattr(self, name, np.asarray(getattr(self, name)))

    return _SpikeInspector()


_INSPECTED_MODEL = None


def inspected_model_class():
    """A keras.Model class whose train_step is fit's (compute_loss, optimizer.apply, the loss tracker weighted
    by batch size) and also logs `grad_norm`, the global norm of the batch's gradient *before* any clipping,
    and `raw_batch_loss`, the batch's own loss. Built once (Keras is imported when first asked for)."""
    global _INSPECTED_MODEL
    if _INSPECTED_MODEL is None:
        import keras
        import tensorflow as tf

        class InspectedModel(keras.Model):
            def train_step(self, data):
                x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
                grads = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply(grads, self.trainable_variables)
                self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
                return {"loss": self._loss_tracker.result(), "grad_norm": tf.linalg.global_norm(grads),
                        "raw_batch_loss": loss}
        _INSPECTED_MODEL = InspectedModel
    return _INSPECTED_MODEL


def inspected_tagger(units: int = 32, layers: int = 2, *, output_bias: float | None = None,
                     seed: int | None = None):
    """lstm_tagger whose train_step also logs `grad_norm` and `raw_batch_loss` (inspected_model_class).
    Same maths as model.fit otherwise."""
    base = imb.lstm_tagger(units, layers, output_bias=output_bias, seed=seed)
    return inspected_model_class()(base.inputs, base.outputs, name="inspected_tagger")


def loss_breakdown(model, x: np.ndarray, y: np.ndarray, w: np.ndarray, top: int = 5) -> dict:
    """Which series and timesteps carry a batch's weighted loss.

    x (B, T, 1), y (B, T), w (B, T). Returns per_series (B,) summed w·l share
    of the batch total, per_step (B, T) w·l, the batch mean loss, and the `top`
    largest contributing (series, step, label, p, w, w·l, share) rows.
    """
    p = np.asarray(model(x, training=False))[..., 0].astype(np.float64)
    wl = np.asarray(w, np.float64) * imb.bce_np(np.asarray(y, np.float64), p)
    total = wl.sum()
    flat = np.argsort(-wl, axis=None)[:top]
    rows = []
    for f in flat:
        i, t = np.unravel_index(f, wl.shape)
        rows.append({"series": int(i), "step": int(t), "label": int(y[i, t]), "p": float(p[i, t]),
                     "weight": float(w[i, t]), "w·l": float(wl[i, t]), "share": float(wl[i, t] / total)})
    return {"per_series": wl.sum(axis=1) / total, "per_step": wl, "batch_mean_loss": float(wl.mean()),
            "top": rows, "share_anomalous_steps": float(wl[np.asarray(y) > 0.5].sum() / total),
            "predictions": p}



def fixed_model_batch_losses(predict, x: np.ndarray, y: np.ndarray, w: np.ndarray, *, batch_size: int,
                             n_batches: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weighted losses mean(w·l) of one *fixed* model on random batches of (x, y, w).

    predict: x (B, T, 1) → probabilities (B, T) (e.g. TaggerTrainer.predict).
    The model does not change between batches, so any spread in the losses is
    batch composition alone. `n_batches` batches of `batch_size` series are
    drawn at random (each without repeats), as many epochs of shuffling would.
    Returns (losses (n_batches,), labelled steps per batch).
    """
    rng = np.random.default_rng(seed)
    p = np.asarray(predict(x), np.float64)
    losses, positives = [], []
    for _ in range(n_batches):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        losses.append(imb.weighted_bce_np(y[idx], p[idx], w[idx]))
        positives.append(int(y[idx].sum()))
    return np.array(losses), np.array(positives)

