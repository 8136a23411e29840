"""Unit tests for helpers.distributed and helpers.scaling (small data, no notebook)."""
import json

import numpy as np
import pytest

from helpers import distributed as dist
from helpers import child_interpreters
from helpers import multiworker
from helpers import scaling


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 64), dtype=np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32)


# ---------------------------------------------------------------- scaling (NumPy softmax regression)

def test_mean_gradient_matches_finite_differences():
    x, y = _data(20)
    xa = scaling.augment(x)
    W = np.random.default_rng(1).normal(0, 0.1, (65, 10))

    def loss(W):
        p = scaling.softmax(xa @ W)
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    g = scaling.mean_gradient(W, xa, y)
    eps = 1e-6
    for i, j in [(0, 0), (3, 7), (64, 2)]:
        E = np.zeros_like(W)
        E[i, j] = eps
        assert g[i, j] == pytest.approx((loss(W + E) - loss(W - E)) / (2 * eps), rel=1e-5, abs=1e-9)


def test_noise_scale_matches_explicit_per_example_gradients():
    x, y = _data(30)
    xa = scaling.augment(x)
    W = np.random.default_rng(2).normal(0, 0.1, (65, 10))
    per_example = np.stack([scaling.mean_gradient(W, xa[i:i + 1], y[i:i + 1]).ravel() for i in range(len(y))])
    G = per_example.mean(0)
    trace = np.sum(np.sum((per_example - G) ** 2, axis=1)) / (len(y) - 1)   # unbiased, as lesson 01
    got = scaling.gradient_noise_scale(W, xa, y)
    assert got["trace_cov"] == pytest.approx(trace, rel=1e-9)
    assert got["b_simple"] == pytest.approx(trace / np.sum(G ** 2), rel=1e-9)


def test_one_softmax_regression_for_both_lessons():
    """scaling (augmented layout) and gradient_noise (W, b) are the same model: same gradient, same B_simple."""
    from helpers.gradient_noise import SoftmaxRegression, measure_gradient_noise
    x, y = _data(40)
    xa = scaling.augment(x)
    W = np.random.default_rng(3).normal(0, 0.1, (65, 10))
    model = SoftmaxRegression.from_augmented(W)
    g = model.gradient(x.astype(np.float64), y)
    np.testing.assert_allclose(scaling.mean_gradient(W, xa, y)[:-1].ravel(), g[:640], rtol=1e-10)
    np.testing.assert_allclose(scaling.mean_gradient(W, xa, y)[-1], g[640:], rtol=1e-10)
    noise = measure_gradient_noise(model, x.astype(np.float64), y, [1, 2, 4], 50, np.random.default_rng(0))
    assert scaling.gradient_noise_scale(W, xa, y)["b_simple"] == pytest.approx(noise.noise_scale, rel=1e-9)


def test_fit_critical_batch_recovers_known_curve():
    B = np.array([8, 16, 32, 64, 128, 256, 512])
    fit = scaling.fit_critical_batch(B, scaling.predicted_steps(B, 30.0, 100.0))
    assert fit["s_min"] == pytest.approx(30.0, rel=1e-9)
    assert fit["b_noise"] == pytest.approx(100.0, rel=1e-9)


def test_steps_to_target_same_for_one_rate_or_many():
    x, y = _data(200)
    xa = scaling.augment(x)
    many = scaling.steps_to_target(xa, y, xa, y, batch=20, learning_rates=[0.5, 2.0], target=0.3, max_steps=200, seed=0)
    one = scaling.steps_to_target(xa, y, xa, y, batch=20, learning_rates=[2.0], target=0.3, max_steps=200, seed=0)
    assert many[1] == one[0] and one[0] is not None
    assert scaling.steps_to_target(xa, y, xa, y, batch=20, learning_rates=[1e-6], target=0.99,
                                   max_steps=5, seed=0) == [None]


@pytest.mark.parametrize("rule, expected", [("fixed", 0.1), ("linear", 0.4), ("sqrt", 0.2)])
def test_learning_rate_rules(rule, expected):
    assert scaling.learning_rate_at(3, rule=rule, replicas=4, base_lr=0.1, warmup_steps=10) == pytest.approx(expected)


def test_warmup_ramps_linearly_to_the_scaled_rate():
    at = lambda s: scaling.learning_rate_at(s, rule="linear + warm-up", replicas=4, base_lr=0.1, warmup_steps=10)
    assert [at(0), at(5), at(10), at(50)] == pytest.approx([0.1, 0.25, 0.4, 0.4])
    with pytest.raises(ValueError):
        scaling.learning_rate_at(0, rule="cubic", replicas=2, base_lr=0.1, warmup_steps=0)


def test_train_with_rule_counts_steps_and_rates():
    x, y = _data(100)
    xa = scaling.augment(x)
    r = scaling.train_with_rule(xa, y, xa, y, replicas=2, per_replica_batch=10, epochs=3, base_lr=0.1,
                                rule="linear + warm-up", warmup_epochs=1, seed=0)
    assert r["global_batch"] == 20 and r["steps_per_epoch"] == 5
    assert r["lr_per_epoch"] == pytest.approx([0.1, 0.2, 0.2])
    assert len(r["test_accuracy"]) == 3


# ---------------------------------------------------------------- distributed (pure helpers)

def test_ring_allreduce_and_step_time_model():
    k = np.array([1, 2, 4])
    t = dist.ring_allreduce_seconds(1e9, k, 1e9)
    assert t == pytest.approx([0.0, 1.0, 1.5])
    assert dist.step_time_model(2.0, 1e9, k, 1e9) == pytest.approx([2.0, 2.0, 2.0])
    # weak scaling keeps the per-replica compute; full overlap hides the all-reduce behind it
    assert dist.step_time_model(2.0, 1e9, k, 1e9, scaling="weak") == pytest.approx([2.0, 3.0, 3.5])
    assert dist.step_time_model(2.0, 1e9, k, 1e9, scaling="weak", overlap=1.0) == pytest.approx([2.0, 2.0, 2.0])
    assert dist.throughput_speedup(2.0, 1e9, k, 1e9, scaling="weak", overlap=1.0) == pytest.approx([1.0, 2.0, 4.0])
    assert dist.throughput_speedup(2.0, 1e9, k, 1e9, scaling="strong") == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        dist.step_time_model(2.0, 1e9, k, 1e9, scaling="diagonal")


def test_tf_config_names_a_loopback_cluster():
    ports = [multiworker.free_port(), multiworker.free_port()]
    cfg = json.loads(multiworker.tf_config(ports, 1))
    assert cfg["cluster"]["worker"] == [f"127.0.0.1:{p}" for p in ports]
    assert cfg["task"] == {"type": "worker", "index": 1}


def test_short_error_elides_tensor_dumps():
    msg = "ValueError: Attempt to convert a value (PerReplica:{ 0: <tf.Tensor: numpy= array([[0.]]) }) with x"
    assert dist.short_error(msg) == "ValueError: Attempt to convert a value (PerReplica:{...}) with x"


def test_weight_comparisons():
    a = [np.zeros((2, 2)), np.ones(3)]
    b = [np.zeros((2, 2)), np.ones(3) + [0, 0.5, 0]]
    assert dist.max_abs_diff(a, b) == pytest.approx(0.5)
    assert dist.update_norm(a, b) == pytest.approx(0.5)


# ---------------------------------------------------------------- distributed (TensorFlow, one device)

def test_batches_dataset_keeps_sizes_and_order():
    x, y = _data(20)
    batches = list(dist.batches_dataset(x, y, [8, 7]))
    assert [len(b[1]) for b in batches] == [8, 7]
    np.testing.assert_array_equal(batches[1][1].numpy(), y[8:15])


def test_one_device_fit_is_plain_sgd():
    """One SGD step of fit_weights on one device equals w - lr * gradient (checked on the last layer)."""
    import keras
    import tensorflow as tf
    x, y = _data(16)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    out = dist.fit_weights(replicas=1, weights=w0, x=x, y=y, sizes=[16], learning_rate=0.1, hidden=8)
    model = dist.replica_model("mlp", hidden=8)
    model.set_weights(w0)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    grads = tape.gradient(loss, model.trainable_weights)
    expected = [w - 0.1 * np.asarray(g) for w, g in zip(w0, grads)]
    assert dist.max_abs_diff(out["weights"], expected) < 1e-6


def test_one_device_custom_loop_reports_the_batch_loss():
    x, y = _data(16)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    a = dist.custom_loop_step(replicas=1, weights=w0, x=x, y=y, learning_rate=0.1, divide_again=False, hidden=8)
    b = dist.fit_weights(replicas=1, weights=w0, x=x, y=y, sizes=[16], learning_rate=0.1, hidden=8)
    assert a["reported_loss"] == pytest.approx(b["loss"][0], rel=1e-5)
    assert dist.max_abs_diff(a["weights"], b["weights"]) < 1e-6


def test_clip_after_aggregation_caps_the_step():
    x, y = _data(16)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    out = dist.clip_after_aggregation_weights(replicas=1, weights=w0, x=x, y=y, sizes=[16], learning_rate=1.0,
                                              clip=0.01, hidden=8)
    assert dist.update_norm(w0, out["weights"]) == pytest.approx(0.01, rel=1e-4)


def test_a_schedule_in_steps_counts_optimizer_steps():
    x, y = _data(32)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    out = dist.fit_weights(replicas=1, weights=w0, x=x, y=y, sizes=[8] * 4, learning_rate=0.4, hidden=8,
                           decay_steps=2, epochs=2)
    assert out["iterations"] == 8 and out["learning_rate"] == pytest.approx(0.4 * 0.5 ** 4, rel=1e-6)


def test_two_replica_custom_loop_is_the_one_device_step():
    """The hand-written distributed step (loss / global batch, SUM) on 2 logical CPUs equals fit on 1 device."""
    x, y = _data(32)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    job = dict(weights=w0, x=x, y=y, sizes=[16, 16], learning_rate=0.1, hidden=8)
    two = child_interpreters.run_in_child(dist.custom_loop_weights, logical_devices=2, replicas=2, **job)
    one = dist.fit_weights(replicas=1, **job)
    assert dist.max_abs_diff(two["weights"], one["weights"]) < 1e-6
    assert dist.max_abs_diff(two["weights"], w0) > 1e-3


def test_strategy_for_one_replica_is_the_default_strategy():
    import tensorflow as tf
    assert dist.strategy_for(1) is tf.distribute.get_strategy()


def test_run_in_child_returns_the_result_and_propagates_errors():
    assert child_interpreters.run_in_child(scaling.learning_rate_at, 2, logical_devices=0, rule="linear", replicas=3,
                                           base_lr=0.5, warmup_steps=0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="rule must be"):
        child_interpreters.run_in_child(scaling.learning_rate_at, 0, logical_devices=0, rule="bad", replicas=1,
                                        base_lr=0.1, warmup_steps=0)


def test_replica_model_rejects_unknown_kind():
    with pytest.raises(ValueError):
        dist.replica_model("resnet")


def test_sweep_keeps_the_fastest_rate_that_always_reaches_the_target():
    x, y = _data(200)
    xa = scaling.augment(x)
    rows = scaling.batch_scaling_sweep(xa, y, xa, y, batches=[10, 40], learning_rates=[1e-6, 2.0], target=0.3,
                                         max_steps=150, seed=0, repeats=2, progress=False)
    assert [r["batch"] for r in rows] == [10, 40]
    for r in rows:
        assert r["steps_by_lr"][1e-6] is None          # a rate that never gets there is not picked
        assert r["best_lr"] == 2.0 and r["steps"] == r["steps_by_lr"][2.0]


def test_replica_devices_fall_back_to_cpu_and_refuse_too_many():
    import tensorflow as tf
    names = child_interpreters.replica_devices(1)
    kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    assert len(names) == 1 and kind in names[0].upper()
    with pytest.raises(RuntimeError, match="replicas need"):
        child_interpreters.replica_devices(10_000)


def _has_gpu():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.skipif(not _has_gpu(), reason="no GPU on this machine: the GPU path of strategy_for is not exercised")
def test_strategy_for_uses_gpus_split_from_one_when_present():
    """With a GPU, 2 replicas run on 2 (logical) GPUs and still take the one-device step."""
    devices = child_interpreters.run_in_child(dist.strategy_devices, logical_devices=2, replicas=2)
    assert len(devices) == 2 and all("GPU" in d.upper() for d in devices)
    x, y = _data(32)
    w0 = dist.initial_weights("mlp", seed=0, hidden=8)
    job = dict(weights=w0, x=x, y=y, sizes=[16, 16], learning_rate=0.1, hidden=8)
    two = child_interpreters.run_in_child(dist.custom_loop_weights, logical_devices=2, replicas=2, **job)
    assert dist.max_abs_diff(two["weights"], dist.fit_weights(replicas=1, **job)["weights"]) < 1e-5


def test_sweep_takes_the_median_over_orders_and_keeps_a_rate_that_fails_one(monkeypatch):
    """Three data orders, four rates: rate 2 fails one order (median still 30), rate 8 fails two (not reached);
    the fastest rate is 4, inside the grid; the smallest rate within 10 % of its steps is 4 too."""
    scripted = iter([[50, 30, 24, None], [60, 20, 40, None], [55, None, 25, 100]])
    monkeypatch.setattr(scaling, "steps_to_target", lambda *a, **k: next(scripted))
    (row,) = scaling.batch_scaling_sweep(None, None, None, None, batches=[16], learning_rates=[1, 2, 4, 8],
                                           target=0.9, max_steps=400, seed=0, repeats=3, progress=False)
    assert row["steps_by_lr"] == {1.0: 55.0, 2.0: 30.0, 4.0: 25.0, 8.0: None}
    assert row["reached_by_lr"] == {1.0: 3, 2.0: 2, 4.0: 3, 8.0: 1}
    assert row["fastest_lr"] == 4.0 and row["steps"] == 25.0 and row["interior"] is True and row["best_lr"] == 4.0


def test_sweep_flags_a_best_rate_at_the_grids_edge_but_not_a_flat_top(monkeypatch):
    # steps still falling at the top of the grid: the best rate is its last one, not interior
    scripted = iter([[50, 30], [60, 20], [55, 25]])
    monkeypatch.setattr(scaling, "steps_to_target", lambda *a, **k: next(scripted))
    (row,) = scaling.batch_scaling_sweep(None, None, None, None, batches=[16], learning_rates=[1, 2], target=0.9,
                                           max_steps=400, seed=0, repeats=3, progress=False)
    assert row["fastest_lr"] == 2.0 and row["best_lr"] == 2.0 and row["interior"] is False
    # flat above rate 2 (within 10 %): the fastest rate may sit at the top, the best rate is 2, inside the grid
    scripted = iter([[50, 30, 29, 28]] * 3)
    monkeypatch.setattr(scaling, "steps_to_target", lambda *a, **k: next(scripted))
    (row,) = scaling.batch_scaling_sweep(None, None, None, None, batches=[16], learning_rates=[1, 2, 4, 8],
                                           target=0.9, max_steps=400, seed=0, repeats=3, progress=False)
    assert row["fastest_lr"] == 8.0 and row["best_lr"] == 2.0 and row["interior"] is True


def test_epoch_schedule_warms_up_then_decays_at_epoch_boundaries():
    sched = dist.epoch_schedule(0.1, 0.4, steps_per_epoch=10, warmup_epochs=2, decay_epochs=(5, 8), decay_factor=0.1)
    rate = lambda step: float(sched(step))      # noqa: E731
    assert rate(0) == pytest.approx(0.1) and rate(10) == pytest.approx(0.25) and rate(20) == pytest.approx(0.4)
    assert rate(49) == pytest.approx(0.4) and rate(50) == pytest.approx(0.04) and rate(80) == pytest.approx(0.004)
    # the same schedule on twice the replicas: half the steps per epoch, the same rate per epoch
    half = dist.epoch_schedule(0.1, 0.4, steps_per_epoch=5, warmup_epochs=2, decay_epochs=(5, 8), decay_factor=0.1)
    assert [float(half(e * 5)) for e in range(10)] == pytest.approx([rate(e * 10) for e in range(10)])


def test_train_for_accuracy_reports_the_rate_of_each_epoch():
    x, y = _data(96)
    w = dist.initial_weights("mlp", seed=0)
    r = dist.train_for_accuracy(replicas=1, weights=w, x=x, y=y, x_test=x, y_test=y, per_replica_batch=32, epochs=4,
                                base_learning_rate=0.1, lr_scale=2, warmup_epochs=1, decay_epochs=(2,), seed=0)
    assert r["steps"] == [3, 6, 9, 12]
    # the rate of each epoch's last step: warm-up from 0.1 to 0.2 over the first epoch's 3 steps, ×0.1 from epoch 3
    assert r["learning_rate"] == pytest.approx([0.1 + 0.1 * 2 / 3, 0.2, 0.02, 0.02], rel=1e-5)
    assert len(r["train_loss_by_epoch"]) == 4 and len(r["weights"]) == len(w)


def test_shuffled_epochs_give_every_batch_size_the_same_order():
    x, y = _data(96)
    ds_small, spe_small = dist.shuffled_epochs(x, y, global_batch=16, epochs=2, seed=3)
    ds_large, spe_large = dist.shuffled_epochs(x, y, global_batch=32, epochs=2, seed=3)
    assert (spe_small, spe_large) == (6, 3)
    small = np.concatenate([b.numpy() for _, b in ds_small])
    large = np.concatenate([b.numpy() for _, b in ds_large])
    np.testing.assert_array_equal(small, large)
