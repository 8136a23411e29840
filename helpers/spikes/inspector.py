"""Seeing the true per-batch loss (lessons 06–08); undoing Keras's running mean is lesson 06's own code
(helpers.lessons.l06.undo_running_mean).

    InspectedModel           a keras.Model whose train_step also logs grad_norm and the raw batch loss
"""
from __future__ import annotations

from ..workbook.frameworks import keras, tf


class InspectedModel(keras.Model):
    """A keras.Model whose train_step is fit's (compute_loss, optimizer.apply, the loss tracker weighted by batch
    size) and also logs `grad_norm`, the global norm of the batch's gradient *before* any clipping, and
    `raw_batch_loss`, the batch's own loss."""

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
