"""helpers.batch_size: the driver of lesson 01's compiled steps-to-target runs and its rate sweep."""
import numpy as np
import pytest

from helpers.batch_size import TargetRun, compiled_steps_to_target, steps_per_epoch, tuned_rate_sweep
from helpers.gradient_noise import tuned_rates


class _FakeModel:
    """Stands in for a Keras model: the weights are one number, the training loss is that number."""
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


def _descent(model, per_step, seen=None):
    """sgd_until for the fake model: each step moves the loss by -lr·per_step, stopping as the page's loop does."""
    def sgd_until(orders, batch_size, target):
        orders, b, target = np.asarray(orders), int(batch_size), float(target)
        if seen is not None:
            seen.append(orders.shape)
        start, losses = model.w, []
        for _ in range(orders.shape[0] * steps_per_epoch(orders.shape[1], b)):
            model.w -= model.lr * per_step
            losses.append(model.w)
            if model.w <= target or not model.w <= 4 * start:
                break
        return np.asarray(losses, np.float32)
    return sgd_until


def test_a_run_stops_at_the_first_step_at_the_target_and_measures_the_test_accuracy_there():
    model, seen = _FakeModel(), []
    run = compiled_steps_to_target(model, [5.0], _descent(model, 1.0, seen), 10, batch_size=3, learning_rate=0.5,
                                   seed=0, target=0.7, max_steps=100, test_accuracy=lambda: model.w, epochs_per_call=2)
    assert run.steps == 9 and run.stopped_at is None            # 5 − 0.5·9 = 0.5, the first loss ≤ 0.7
    assert run.test_accuracy == pytest.approx(0.5)              # taken at the stopping point, not later
    assert seen == [(2, 10), (2, 10)]                           # 2 epochs per call of 4 steps each (the last batch of 1)
    assert len(run.loss) == 9


def test_a_run_restarts_from_the_start_weights_and_is_capped_or_diverges():
    model = _FakeModel()
    capped = compiled_steps_to_target(model, [5.0], _descent(model, 0.01), 10, batch_size=3, learning_rate=0.5,
                                      seed=0, target=1.0, max_steps=12)
    assert capped.steps is None and capped.stopped_at == 12 and capped.loss[0] == pytest.approx(4.995)
    diverged = compiled_steps_to_target(model, [5.0], _descent(model, -20.0), 10, batch_size=3, learning_rate=1.0,
                                        seed=0, target=1.0, max_steps=100)
    assert diverged.steps is None and diverged.stopped_at is None and len(diverged.loss) == 1


def _fake_run(table):
    """train(b, r, s, cap) whose steps come from table[(b, r)][s]; a run needing more than cap is cut there."""
    calls = []

    def train(b, r, s, cap):
        calls.append((b, r, s, cap))
        need = table[(b, r)][s]
        if need is not None and need <= cap:
            return TargetRun(b, r, s, need, 0.9, np.zeros(need), 0.0)
        return TargetRun(b, r, s, None, None, np.zeros(1), 0.0, stopped_at=cap if need is not None else None)
    return train, calls


def test_the_sweep_goes_up_the_rates_and_caps_runs_at_twice_the_best_median():
    table = {(4, 0.5): [100, 110, 90], (4, 1.0): [60, 70, 50], (4, 2.0): [30, 200, 40], (4, 4.0): [None, None, None]}
    train, calls = _fake_run(table)
    runs = tuned_rate_sweep(train, [4], [2.0, 0.5, 4.0, 1.0], [0, 1, 2], max_steps=1000)
    assert [c[1] for c in calls[::3]] == [0.5, 1.0, 2.0, 4.0]
    assert [c[3] for c in calls if c[1] == 1.0] == [200] * 3    # twice the median 100 of rate 0.5
    assert [c[3] for c in calls if c[1] == 2.0] == [120] * 3    # twice the median 60 of rate 1.0
    assert runs[(4, 2.0, 1)].steps is None and runs[(4, 2.0, 1)].stopped_at == 120
    # rate 2.0 has the fewest median steps of the runs that finished, but failed one seed: 1.0 is the tuned rate
    assert tuned_rates(runs, [4], [0.5, 1.0, 2.0, 4.0], [0, 1, 2]) == {4: 1.0}


def test_compiled_steps_to_target_with_a_keras_loop_matches_fit():
    keras = pytest.importorskip("keras")
    import tensorflow as tf
    from helpers.models import compile_classifier, mlp
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 64)).astype(np.float32), rng.integers(0, 10, 20)
    keras.utils.set_random_seed(1)
    model = compile_classifier(mlp((8,)), optimizer="sgd", learning_rate=0.2)
    start = model.get_weights()
    xt, yt = tf.constant(x), tf.constant(y)
    loss = lambda: keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yt, model(xt, training=False)))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.float32)])
    def sgd_until(orders, batch_size, target):
        per_epoch = (tf.shape(orders)[1] + batch_size - 1) // batch_size
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(tf.shape(orders)[0] * per_epoch):
            first = (i % per_epoch) * batch_size
            batch = orders[i // per_epoch, first:first + batch_size]
            with tf.GradientTape() as tape:
                step_loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                    tf.gather(yt, batch), model(tf.gather(xt, batch), training=True)))
            grads = tape.gradient(step_loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            now = loss()
            losses = losses.write(i, now)
            if now <= target:
                break
        return losses.stack()

    run = compiled_steps_to_target(model, start, sgd_until, 20, batch_size=6, learning_rate=0.2, seed=3,
                                   target=-1.0, max_steps=4, epochs_per_call=1)
    assert run.steps is None and run.stopped_at == 4
    mine = model.get_weights()
    order = np.random.default_rng(3).permutation(20)            # the first epoch's order the driver drew
    keras.utils.set_random_seed(1)
    ref = compile_classifier(mlp((8,)), optimizer="sgd", learning_rate=0.2)
    ref.fit(x[order], y[order], batch_size=6, epochs=1, shuffle=False, verbose=0)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(mine, ref.get_weights())) < 1e-5
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(mine, start)) > 1e-3


def test_a_tuned_rate_keeps_one_grid_step_from_divergence():
    runs = {}
    for r, steps, stopped in [(0.5, [90, 95, 99], None), (1.0, [50, 55, 52], None), (2.0, [40, None, 41], None)]:
        for s, n in enumerate(steps):
            runs[(4, r, s)] = TargetRun(4, r, s, n, 0.9 if n else None, np.zeros(1), 0.0, stopped_at=stopped)
    # 1.0 reached on every seed but 2.0 diverged on seed 1: 1.0 is at the edge, 0.5 is the rate to rely on
    assert tuned_rates(runs, [4], [0.5, 1.0, 2.0], [0, 1, 2]) == {4: 0.5}
    runs[(4, 2.0, 1)] = TargetRun(4, 2.0, 1, None, None, np.zeros(1), 0.0, stopped_at=80)   # cut short, not diverged
    assert tuned_rates(runs, [4], [0.5, 1.0, 2.0], [0, 1, 2]) == {4: 1.0}


def test_runs_at_tuned_rates_and_their_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from helpers.batch_size import plot_steps_to_target
    from helpers.gradient_noise import at_tuned_rates
    runs = {(b, r, s): TargetRun(b, r, s, n, acc, np.zeros(1), 0.0)
            for b, r, s, n, acc in [(4, 1.0, 5, 100, 0.9), (4, 1.0, 6, None, None), (4, 1.0, 7, 120, 0.8),
                                    (16, 2.0, 5, 30, 0.95), (16, 2.0, 6, 40, 0.9), (16, 2.0, 7, 35, 0.85),
                                    (16, 1.0, 5, 99, 0.1)]}
    per_batch = at_tuned_rates(runs, {4: 1.0, 16: 2.0}, [5, 6, 7])
    assert per_batch == {4: {"steps": [100, None, 120], "acc": [0.9, 0.8]},
                         16: {"steps": [30, 40, 35], "acc": [0.95, 0.9, 0.85]}}
    fig, ax = plt.subplots()
    grid = plot_steps_to_target(ax, per_batch, {"s_min": 20.0, "b_crit": 10.0}, "m")
    assert grid[0] == 4 and grid[-1] == 16
    xs, ys = ax.lines[0].get_data()                      # the error bar's markers: the medians
    assert list(xs) == [4, 16] and list(ys) == [120, 35]  # the failed run counts as infinite in B=4's median
    plt.close(fig)
