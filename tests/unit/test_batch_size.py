"""helpers.batch_size: the compiled-SGD driver, the learning-rate grid and the steps-to-target readers."""
import numpy as np
import pytest

from helpers.batch_size import (RegimeRun, best_rates, compiled_sgd_run, learning_rate_grid,
                                steps_per_epoch, steps_to_loss)


def _run(loss, b=4, lr=0.1):
    loss = np.asarray(loss, float)
    steps = np.arange(len(loss)) * 3
    return RegimeRun(b, lr, steps / 3.0, steps, np.arange(len(loss)) * 0.5, loss)


def test_steps_to_loss_reads_the_first_point_at_or_below_target():
    run = _run([2.0, 1.0, 0.3, 0.5, 0.1])
    assert steps_to_loss(run, 0.3) == 6
    assert steps_to_loss(run, 0.05) is None


def test_best_rates_pick_the_lowest_finite_final_loss_per_batch():
    runs = {(4, 0.1): _run([2, 1.0]), (4, 0.3): _run([2, 0.4]), (4, 1.0): _run([2, np.nan]),
            (16, 0.1): _run([2, 0.9]), (16, 0.3): _run([2, 3.0])}
    assert best_rates(runs) == {4: 0.3, 16: 0.1}


def test_learning_rate_grid_calls_every_pair_once():
    calls = []
    runs = learning_rate_grid(lambda b, r: calls.append((b, r)) or _run([1, b * r]), [2, 8], [0.5, 1.0])
    assert calls == [(2, 0.5), (2, 1.0), (8, 0.5), (8, 1.0)] and runs[(8, 0.5)].loss[-1] == 4.0


class _FakeModel:
    """Stands in for a Keras model: weights are one number, the loss is that number."""
    def __init__(self):
        self.w, self.lr = 0.0, None
        self.optimizer = self

    def set_weights(self, weights):
        self.w = float(weights[0])

    @property
    def learning_rate(self):
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value):
        self.lr = value


def test_compiled_sgd_run_counts_steps_logs_loss_and_resets_the_weights():
    model, seen = _FakeModel(), []

    def sgd_steps(order, batch_size):
        order = np.asarray(order)
        seen.append(len(order))
        model.w -= model.lr * steps_per_epoch(len(order), int(batch_size))   # one unit of descent per step

    n, b = 10, 3                                        # 4 steps per epoch, the last batch of 1
    run = compiled_sgd_run(model, [5.0], sgd_steps, lambda: model.w, n, batch_size=b, learning_rate=0.5,
                           epochs=2, evals_per_epoch=2)
    assert seen == [6, 4, 6, 4]                         # whole batches per chunk, every example once per epoch
    assert list(run.steps) == [0, 2, 4, 6, 8] and list(run.epochs) == [0, 0.5, 1, 1.5, 2]
    assert list(run.loss) == [5.0, 4.0, 3.0, 2.0, 1.0] and run.learning_rate == 0.5
    assert run.seconds[0] == 0 and np.all(np.diff(run.seconds) >= 0)
    again = compiled_sgd_run(model, [5.0], sgd_steps, lambda: model.w, n, batch_size=b, learning_rate=0.5, epochs=1)
    assert list(again.loss) == [5.0, 3.0]               # restarted from the start weights


def test_compiled_sgd_run_stops_a_diverging_run():
    model = _FakeModel()

    def sgd_steps(order, batch_size):
        model.w *= 10                                   # the loss explodes

    run = compiled_sgd_run(model, [1.0], sgd_steps, lambda: model.w, 8, batch_size=4, learning_rate=9.0,
                           epochs=5, stop_if_diverged=True)
    assert len(run.loss) == 2 and run.loss[-1] > run.loss[0]
    full = compiled_sgd_run(model, [1.0], sgd_steps, lambda: model.w, 8, batch_size=4, learning_rate=9.0, epochs=3)
    assert len(full.loss) == 4


def test_compiled_sgd_run_matches_keras_fit_on_a_tiny_mlp():
    keras = pytest.importorskip("keras")
    import tensorflow as tf
    from helpers.models import compile_classifier, mlp
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 64)).astype(np.float32), rng.integers(0, 10, 20)
    keras.utils.set_random_seed(1)
    model = compile_classifier(mlp((8,)), optimizer="sgd", learning_rate=0.2)
    start = model.get_weights()
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
    def sgd_steps(order, batch_size):
        for first in tf.range(0, tf.size(order), batch_size):
            batch = order[first:first + batch_size]
            with tf.GradientTape() as tape:
                loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                    tf.gather(yt, batch), model(tf.gather(xt, batch), training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))

    loss = lambda: keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yt, model(xt, training=False)))
    compiled_sgd_run(model, start, sgd_steps, loss, 20, batch_size=6, learning_rate=0.2, epochs=1, seed=3)
    mine = model.get_weights()
    order = np.random.default_rng(3).permutation(20)      # the order compiled_sgd_run drew
    keras.utils.set_random_seed(1)
    ref = compile_classifier(mlp((8,)), optimizer="sgd", learning_rate=0.2)
    ref.fit(x[order], y[order], batch_size=6, epochs=1, shuffle=False, verbose=0)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(mine, ref.get_weights())) < 1e-5
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(mine, start)) > 1e-3
