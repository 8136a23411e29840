import keras
import numpy as np
import pytest

from helpers.workbook.environment import seed_everything
from helpers.models import compile_classifier, mlp
from helpers.training import History, accuracy, epoch_log, progress_callback, steps_per_call, train


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.random((n, 64), dtype=np.float32)
    return x, (x[:, :10].argmax(axis=1)).astype(np.int32)


def test_train_returns_a_history_table():
    seed_everything(0)
    x, y = _data()
    model = compile_classifier(mlp((16,)), learning_rate=1e-2)
    hist = train(model, x, y, epochs=3, batch_size=32, validation_data=(x, y), progress=False)
    assert isinstance(hist, History) and hist.epochs == 3 and isinstance(hist.seconds, float)
    assert hist.table.columns[0] == "epoch" and len(hist.table) == 3
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(hist.metrics)
    assert hist.steps_per_epoch == 3


def test_progress_bar_has_no_per_batch_work():
    """Per-batch callbacks make Keras sync every step; the bar must only act per epoch."""
    cb = progress_callback(3, "x", enabled=False)
    for hook in ["on_train_batch_begin", "on_train_batch_end", "on_batch_end"]:
        assert getattr(type(cb), hook) is getattr(keras.callbacks.Callback, hook)


def test_epoch_log_records_loss_on_given_data():
    seed_everything(0)
    x, y = _data()
    model = compile_classifier(mlp((16,)), learning_rate=1e-2)
    log = epoch_log(x, y)
    hist = train(model, x, y, epochs=2, batch_size=32, callbacks=[log], progress=False)
    assert len(log.seconds) == 2 and len(log.loss) == 2
    direct = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model.predict(x, verbose=0))))
    assert abs(log.loss[-1] - direct) < 1e-5


def test_accuracy_in_both_modes():
    seed_everything(0)
    x, y = _data()
    model = compile_classifier(mlp((16,), norm="batch"))
    acc_inf = accuracy(model, x, y)
    before = [w.copy() for w in model.get_weights()]
    acc_train = accuracy(model, x, y, training=True, batch_size=32)
    # Keras 3 updates moving statistics on every training-mode call; scoring must not
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    # the same scores computed directly: inference mode on all of x, training mode per batch of 32
    direct_inf = np.mean(np.argmax(model(x, training=False).numpy(), axis=1) == y)
    direct_train = np.mean(np.concatenate([np.argmax(model(x[i:i + 32], training=True).numpy(), axis=1)
                                           for i in range(0, len(x), 32)]) == y)
    assert acc_inf == pytest.approx(direct_inf) and acc_train == pytest.approx(direct_train)
    assert acc_train != acc_inf, "an untrained BN model scores differently in the two modes on this data"


def test_time_callbacks_drives_every_control_kind():
    import ipywidgets as w
    from helpers.workbook.widgets import interact_panel, time_callbacks
    seen = []
    panel = interact_panel(lambda a, b, c, d: seen.append((a, b, c, d)), display_now=False,
                           a=w.IntSlider(1, 1, 10), b=w.Dropdown(options=["x", "y"]), c=w.Checkbox(True),
                           d=w.FloatLogSlider(value=1e-3, base=10, min=-4, max=-1))
    moves = time_callbacks(panel, calls=8)
    assert moves["calls"] == 8 and len(seen) >= 8, "every move ran the function"
    assert {"median_s", "p95_s"}.issubset(moves), "the latencies are returned for make bench to judge"
    assert len({s[0] for s in seen}) > 1 and len({s[1] for s in seen}) == 2 and len({s[2] for s in seen}) == 2
    assert len({s[3] for s in seen}) > 1 and all(1e-4 <= s[3] <= 1e-1 + 1e-12 for s in seen)
    assert seen[-1] == (1, "x", True, 1e-3)   # controls restored


def test_interact_panel_shows_a_returned_table(monkeypatch):
    import IPython.display
    import ipywidgets as w
    from helpers.workbook.tables import Table
    from helpers.workbook.widgets import interact_panel
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    panel = interact_panel(lambda n: Table(["n"], [[n]]) if n > 3 else {"n": n}, display_now=False,
                           n=w.IntSlider(3, 1, 5))
    panel.children[0].value = 4
    panel.children[0].value = 2
    tables = [o for o in shown if isinstance(o, Table)]
    assert [t.rows for t in tables] == [[[4]]], "a returned Table is displayed; a plain dict is not"


def test_steps_per_call_divides_the_epoch():
    assert steps_per_call(45) == 45 and steps_per_call(45, cap=15) == 15 and steps_per_call(45, cap=14) == 9
    assert steps_per_call(44, cap=15, every=45) == 1          # no common divisor but 1
    assert steps_per_call(45, every=15) == 15 and steps_per_call(719) == 1   # 719 is prime
    with pytest.raises(ValueError):
        steps_per_call(0)


def test_a_dividing_steps_per_execution_trains_the_same_steps():
    """A block dividing the epoch: exactly epochs x steps, the same weights as one step per call;
    a block that does not divide it overruns into the next epoch, and here the data runs out
    before the last epoch and is restarted: more steps are trained."""
    import tensorflow as tf
    x, y = _data()                               # 96 samples: 6 steps of 16 per epoch, 4 epochs
    weights, iterations = {}, {}
    for k in (1, steps_per_call(6, cap=4), 4):
        seed_everything(0)
        model = compile_classifier(mlp((16,)), learning_rate=1e-2, steps_per_execution=k)
        data = tf.data.Dataset.from_tensor_slices((np.concatenate([x] * 4), np.concatenate([y] * 4))).batch(16)
        train(model, data, epochs=4, steps_per_epoch=6, progress=False)
        weights[k], iterations[k] = model.get_weights(), int(model.optimizer.iterations.numpy())
    assert steps_per_call(6, cap=4) == 3 and iterations[1] == iterations[3] == 24
    for a, b in zip(weights[1], weights[3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert iterations[4] == 32                   # 8 steps per epoch: 24 batches gone after 3 epochs, then 8 more
