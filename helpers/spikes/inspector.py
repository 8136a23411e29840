"""Seeing the true per-batch loss (lessons 06–08).

    undo_running_mean(...)   per-batch values from Keras 3's running mean in logs["loss"]
    inspected_model_class()  a keras.Model whose train_step also logs grad_norm and the raw batch loss
"""
from __future__ import annotations

import numpy as np


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
