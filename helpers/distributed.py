"""Synchronous data parallelism on logical CPU devices (lesson 05).

What lives here (the interpreters the jobs run in are helpers.child_interpreters; the
multi-worker cluster is helpers.multiworker):
  * strategy_for(k): the process's one MirroredStrategy over k GPUs when the
    machine has them (one GPU is split into k logical GPUs), else over the
    logical CPU devices /cpu:0..k-1; the default strategy for k = 1.
  * distributed_step / loss_function: the hand-written synchronous step every custom
    loop in a child uses: the step and loss lesson 05 writes on its page (section 2,
    generated into helpers.lessons.l05), plus an option to reduce and clip the
    gradients before one update (replica_gradients).
  * Jobs that run inside a child (module-level, picklable arguments, numpy
    results): fit_weights, custom_loop_weights (and its cases sum_vs_mean_weights,
    clip_after_aggregation_weights, custom_loop_step), train_for_accuracy (with
    epoch_schedule, a learning rate counted in epochs, and shuffled_epochs, the
    same data order for every batch size).
  * step_time_model: t(k) = compute/k + ring all-reduce time.

Weights travel as lists of numpy arrays (model.get_weights() order).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from .workbook.frameworks import keras, tf  # first: sets TensorFlow's environment
from .child_interpreters import replica_devices
from .lessons.l05 import distributed_step as page_distributed_step, global_batch_loss

# --------------------------------------------------------------------------- strategies and models

_STRATEGY = None


def strategy_for(replicas: int):
    """This process's strategy: default (one device) for 1, else MirroredStrategy over
    replica_devices(k): the GPUs (or logical GPUs split from one) when present, else /cpu:0..k-1.

    TF32 matmuls are switched off, so GPU runs compare with one device to float32 rounding.
    Only one MirroredStrategy size may exist per process; asking for a second
    size raises a clear error here instead of a collective group-size error later.
    """
    global _STRATEGY
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if replicas == 1:
        return tf.distribute.get_strategy()
    if _STRATEGY is None:
        _STRATEGY = tf.distribute.MirroredStrategy(replica_devices(replicas))
    if _STRATEGY.num_replicas_in_sync != replicas:
        raise RuntimeError(f"this process already holds a {_STRATEGY.num_replicas_in_sync}-replica "
                           f"MirroredStrategy; run {replicas} replicas in another ChildInterpreter")
    return _STRATEGY


def strategy_devices(*, replicas: int) -> list[str]:
    """The devices strategy_for(replicas) runs on in this process (a job for ReplicaPool.call)."""
    return list(strategy_for(replicas).extended.worker_devices)


def replica_model(kind: str = "mlp", *, hidden: int = 64, seed: int = 0, synchronized: bool = False):
    """A small classifier on flat digits, (N, 64) -> (N, 10) probabilities.

    kind: "mlp" (Dense-ReLU-Dense, no BN, no dropout: exact equivalence holds)
          "mlp_bn" (Dense-BN-ReLU-Dense; synchronized=True for cross-replica BN)
    """
    layers = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(64,))
    if kind == "mlp":
        h = layers.Dense(hidden, activation="relu", name="hidden")(inputs)
    elif kind == "mlp_bn":
        h = layers.Dense(hidden, use_bias=False, name="hidden")(inputs)
        h = layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name="bn")(h)
        h = layers.ReLU()(h)
    else:
        raise ValueError(f"kind must be 'mlp' or 'mlp_bn', got {kind!r}")
    outputs = layers.Dense(10, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs, name=kind)


def initial_weights(kind: str = "mlp", seed: int = 0, hidden: int = 64) -> list[np.ndarray]:
    """The starting weights every run of a comparison shares (built on one device)."""
    return [np.asarray(w) for w in replica_model(kind, hidden=hidden, seed=seed).get_weights()]


def batches_dataset(x: np.ndarray, y: np.ndarray, sizes: Sequence[int]):
    """A tf.data.Dataset of consecutive batches of the given sizes, in order (no shuffle).

    x (N, 64), y (N,); sum(sizes) <= N. Batches may differ in size (e.g. 64 then 63).
    """
    ds, start = None, 0
    for s in sizes:
        part = tf.data.Dataset.from_tensor_slices((x[start:start + s], y[start:start + s])).batch(s)
        ds = part if ds is None else ds.concatenate(part)
        start += s
    return ds


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Largest absolute difference over two lists of same-shaped arrays."""
    return float(max(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))) for u, v in zip(a, b)))


def update_norm(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> float:
    """Global L2 norm of the weight change after - before."""
    return float(np.sqrt(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
                             for a, b in zip(after, before))))


# --------------------------------------------------------------------------- jobs (run in a child)


def fit_weights(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray, sizes: Sequence[int],
                learning_rate: float, kind: str = "mlp", synchronized: bool = False, epochs: int = 1,
                optimizer_kwargs: dict | None = None, hidden: int = 64, decay_steps: int | None = None) -> dict:
    """model.fit with plain SGD on batches of `sizes` (global batch sizes) under `replicas` replicas.

    decay_steps: if given, the rate is ExponentialDecay(learning_rate, decay_steps, 0.5),
    a schedule counted in optimizer steps.
    Returns {"weights": list of arrays, "loss": per-epoch reported losses,
             "moving_mean": BN moving mean as read from the variable (or None),
             "learning_rate": the optimizer's rate after training, "iterations": its step counter}.
    """
    strategy = strategy_for(replicas)
    with strategy.scope():
        model = replica_model(kind, hidden=hidden, synchronized=synchronized)
        model.set_weights(weights)
        rate = (keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps=decay_steps, decay_rate=0.5)
                if decay_steps else learning_rate)
        opt = keras.optimizers.SGD(rate, **(optimizer_kwargs or {}))
        model.compile(opt, "sparse_categorical_crossentropy")
    hist = model.fit(batches_dataset(x, y, sizes), epochs=epochs, verbose=0, shuffle=False)
    moving = None
    if kind == "mlp_bn":
        moving = np.asarray(model.get_layer("bn").moving_mean)
    return {"weights": [np.asarray(w) for w in model.get_weights()], "loss": hist.history["loss"],
            "moving_mean": moving, "learning_rate": float(np.asarray(opt.learning_rate)),
            "iterations": int(np.asarray(opt.iterations))}


def replica_gradients(model, loss_fn, xb, yb):
    """One replica's loss and gradients on its slice (xb, yb), not applied: the caller reduces them first."""
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=True))
    return loss, tape.gradient(loss, model.trainable_weights)


def distributed_step(strategy, model, optimizer, loss_fn, *, update="replica", clip_global_norm=None):
    """The synchronous training step: strategy.run on every replica, then strategy.reduce(SUM, ...).

    update="replica": the page's own step (lesson 05 section 2, helpers.lessons.l05.distributed_step): each
      replica applies its gradients, and the Keras optimizer sums them across replicas first.
    update="reduced": the replicas' gradients (replica_gradients) are summed with strategy.reduce(SUM),
      optionally clipped to `clip_global_norm` (clipping *after* aggregation), and applied once in
      cross-replica context.
    Returns a tf.function step(xb, yb) -> loss summed over replicas (the global-batch loss when loss_fn
    divides by the global batch).
    """
    if update not in ("replica", "reduced"):
        raise ValueError(f"update must be 'replica' or 'reduced', got {update!r}")
    if update == "replica":
        return page_distributed_step(strategy, model, optimizer, loss_fn)
    SUM = tf.distribute.ReduceOp.SUM

    @tf.function
    def step(xb, yb):
        loss, grads = strategy.run(lambda a, b: replica_gradients(model, loss_fn, a, b), args=(xb, yb))
        grads = [strategy.reduce(SUM, g, axis=None) for g in grads]
        if clip_global_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, clip_global_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        return strategy.reduce(SUM, loss, axis=None)

    return step


def loss_function(kind: str, strategy, global_batch: int | None = None, divide_again: bool = False):
    """The per-replica loss a hand-written loop uses; (y, probabilities) -> scalar.

    "global_batch": sum of the replica's per-example losses / global batch
        (tf.nn.compute_average_loss; None: replica batch × num_replicas_in_sync).
    "replica_mean": the mean over the replica's own slice (summed across replicas: k × the mean).
    "keras_object": keras.losses.SparseCategoricalCrossentropy(), which in Keras 3
        divides by num_replicas_in_sync by itself inside strategy.run.
    divide_again: divide the result by num_replicas_in_sync once more (the classic mistake).
    """
    if kind == "global_batch":
        base = global_batch_loss(global_batch)        # the page's loss (lesson 05 section 2)
    elif kind == "replica_mean":
        def base(y, p):
            return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, p))
    elif kind == "keras_object":
        base = keras.losses.SparseCategoricalCrossentropy()
    else:
        raise ValueError(f"kind must be 'global_batch', 'replica_mean' or 'keras_object', got {kind!r}")
    if not divide_again:
        return base
    return lambda y, p: base(y, p) / strategy.num_replicas_in_sync


def sgd_replica_model(strategy, weights, learning_rate, hidden):
    """The MLP with the shared weights and a built SGD optimizer, created under the strategy."""
    with strategy.scope():
        model = replica_model("mlp", hidden=hidden)
        model.set_weights(weights)
        opt = keras.optimizers.SGD(learning_rate)
        opt.build(model.trainable_weights)
    return model, opt


def custom_loop_weights(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray, sizes: Sequence[int],
                        learning_rate: float, loss: str = "global_batch", update: str = "reduced",
                        divide_again: bool = False, clip_global_norm: float | None = None, hidden: int = 64) -> dict:
    """Hand-written SGD steps (distributed_step) on consecutive global batches of `sizes`.

    loss, divide_again: see loss_function (the global batch is the step's size when all
    sizes are equal); update, clip_global_norm: see distributed_step.
    Returns {"weights": after the steps, "reported_loss": the first step's loss summed over replicas}.
    """
    strategy = strategy_for(replicas)
    model, opt = sgd_replica_model(strategy, weights, learning_rate, hidden)
    global_batch = sizes[0] if len(set(sizes)) == 1 else None
    step = distributed_step(strategy, model, opt, loss_function(loss, strategy, global_batch, divide_again),
                            update=update, clip_global_norm=clip_global_norm)
    reported = [float(step(xb, yb)) for xb, yb in
                strategy.experimental_distribute_dataset(batches_dataset(x, y, sizes))]
    return {"weights": [np.asarray(w) for w in model.get_weights()], "reported_loss": reported[0]}


def sum_vs_mean_weights(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray,
                        learning_rate: float, hidden: int = 64) -> dict:
    """One SGD step on the global batch (x, y), split over `replicas`, two ways.

    "summed": each replica's mean-loss gradient, summed across replicas, step η.
    "averaged_scaled": the global-batch mean gradient (loss / global batch), step k·η.
    Returns both weight lists.
    """
    common = dict(replicas=replicas, weights=weights, x=x, y=y, sizes=[len(x)], hidden=hidden)
    return {"summed": custom_loop_weights(**common, learning_rate=learning_rate, loss="replica_mean")["weights"],
            "averaged_scaled": custom_loop_weights(**common, learning_rate=learning_rate * replicas,
                                                   loss="global_batch")["weights"]}


def clip_after_aggregation_weights(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray,
                                   sizes: Sequence[int], learning_rate: float, clip: float,
                                   hidden: int = 64) -> dict:
    """SGD steps that clip the *all-reduced* gradient to global norm `clip` (the fix).

    Per replica: gradient of (its losses / global batch); SUM across replicas = the global
    mean gradient; clip that by global norm; apply in cross-replica context (so the
    optimizer does not all-reduce a second time). Returns {"weights": ...}.
    """
    out = custom_loop_weights(replicas=replicas, weights=weights, x=x, y=y, sizes=sizes, learning_rate=learning_rate,
                              loss="global_batch", update="reduced", clip_global_norm=clip, hidden=hidden)
    return {"weights": out["weights"]}


def custom_loop_step(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray, learning_rate: float,
                     divide_again: bool, hidden: int = 64) -> dict:
    """One step of a hand-written loop: Keras loss object inside strategy.run, SGD in replica context.

    The Keras 3 loss object already divides by num_replicas_in_sync inside
    strategy.run and the optimizer sums across replicas; divide_again=True adds
    the classic extra `/ num_replicas_in_sync`. Returns {"reported_loss": sum over
    replicas of their loss values, "weights": after the step}.
    """
    return custom_loop_weights(replicas=replicas, weights=weights, x=x, y=y, sizes=[len(x)],
                               learning_rate=learning_rate, loss="keras_object", update="replica",
                               divide_again=divide_again, hidden=hidden)


def short_error(text: str, limit: int = 160) -> str:
    """An error message on one line, with tensor dumps (PerReplica:{...}) elided."""
    import re
    text = " ".join(text.split())
    text = re.sub(r"\(PerReplica:\{.*\}\)", "(PerReplica:{...})", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def warmup_schedule(base_lr: float, peak_lr: float, warmup_steps: int):
    """Linear warm-up from base_lr to peak_lr over warmup_steps optimizer steps, then constant.

    (Goyal et al. 2017: gradual warm-up from η to kη over the first epochs.)
    """
    return epoch_schedule(base_lr, peak_lr, steps_per_epoch=1, warmup_epochs=warmup_steps)


def epoch_schedule(base_lr: float, peak_lr: float, *, steps_per_epoch: int, warmup_epochs: int = 0,
                   decay_epochs: Sequence[int] = (), decay_factor: float = 0.1):
    """A learning-rate schedule written in epochs, converted to this run's optimizer steps.

    Linear warm-up from base_lr to peak_lr over the first `warmup_epochs`, then peak_lr, multiplied by
    `decay_factor` at the start of each epoch listed in `decay_epochs` (0-based: 30 means "from the 31st
    epoch on"). Because the boundaries are epochs × steps_per_epoch of the run, it means the same per
    epoch on any replica count (lesson 05, section 4's fix). A keras LearningRateSchedule of the step.
    """
    return EpochSchedule(base_lr, peak_lr, steps_per_epoch=steps_per_epoch, warmup_epochs=warmup_epochs,
                         decay_epochs=decay_epochs, decay_factor=decay_factor)


class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """epoch_schedule's schedule: the rate at an optimizer step, from boundaries counted in epochs."""

    def __init__(self, base_lr: float, peak_lr: float, *, steps_per_epoch: int, warmup_epochs: int = 0,
                 decay_epochs: Sequence[int] = (), decay_factor: float = 0.1):
        self.base_lr, self.peak_lr, self.decay_factor = base_lr, peak_lr, decay_factor
        self.steps_per_epoch, self.warmup_epochs, self.decay_epochs = steps_per_epoch, warmup_epochs, decay_epochs
        self.warmup_steps = int(warmup_epochs) * int(steps_per_epoch)
        self.boundaries = [int(e) * int(steps_per_epoch) for e in decay_epochs]

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        if self.warmup_steps > 0:
            frac = keras.ops.minimum(step / float(self.warmup_steps), 1.0)
            rate = self.base_lr + (self.peak_lr - self.base_lr) * frac
        else:
            rate = keras.ops.cast(self.peak_lr, "float32")
        for b in self.boundaries:
            rate = rate * keras.ops.where(step >= float(b), self.decay_factor, 1.0)
        return rate

    def get_config(self):
        return {"base_lr": self.base_lr, "peak_lr": self.peak_lr, "steps_per_epoch": self.steps_per_epoch,
                "warmup_epochs": self.warmup_epochs, "decay_epochs": list(self.decay_epochs),
                "decay_factor": self.decay_factor}


def shuffled_epochs(x: np.ndarray, y: np.ndarray, *, global_batch: int, epochs: int, seed: int):
    """(dataset, steps_per_epoch): `epochs` shuffles of (x (N, 64), y (N,)) drawn from `seed`, each cut into
    full global batches (the last partial one dropped, so every replica gets a full share). The order depends
    on the seed and N only, not on the batch: runs at any replica count see the samples in the same order."""
    steps_per_epoch = len(x) // global_batch
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x))[:steps_per_epoch * global_batch] for _ in range(epochs)])
    return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(global_batch), steps_per_epoch


def train_for_accuracy(*, replicas: int, weights: list, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                       y_test: np.ndarray, per_replica_batch: int, epochs: int, base_learning_rate: float,
                       lr_scale: float = 1.0, warmup_epochs: int = 0, seed: int = 0, hidden: int = 64,
                       decay_epochs: Sequence[int] = (), decay_factor: float = 0.1) -> dict:
    """Train the MLP with model.fit under `replicas` replicas; test accuracy after every epoch.

    Global batch = replicas * per_replica_batch; the peak learning rate is
    lr_scale * base_learning_rate, reached by linear warm-up over warmup_epochs and
    multiplied by decay_factor at each of decay_epochs (epoch_schedule: counted in epochs).
    The data order is drawn from `seed` (the same for every replica count, shuffled_epochs) and
    the last partial global batch is dropped, so every replica gets a full share.
    Returns per-epoch lists ("test_accuracy", "reported_loss", "train_loss_by_epoch": the final model's
    loss on all of (x, y) after each epoch, "steps", "learning_rate": the rate of the epoch's last step),
    after training "train_loss"/"test_loss" evaluated on the full sets
    and "weights", and the training's wall "seconds".
    """
    strategy = strategy_for(replicas)
    global_batch = replicas * per_replica_batch
    ds, steps_per_epoch = shuffled_epochs(x, y, global_batch=global_batch, epochs=epochs, seed=seed)
    with strategy.scope():
        model = replica_model("mlp", hidden=hidden)
        model.set_weights(weights)
        peak = lr_scale * base_learning_rate
        lr = (epoch_schedule(base_learning_rate, peak, steps_per_epoch=steps_per_epoch, warmup_epochs=warmup_epochs,
                             decay_epochs=decay_epochs, decay_factor=decay_factor)
              if warmup_epochs or len(decay_epochs) else peak)
        opt = keras.optimizers.SGD(lr)
        model.compile(opt, "sparse_categorical_crossentropy")
    ce = keras.losses.SparseCategoricalCrossentropy()
    rate_at = (lambda step: float(lr(step - 1))) if callable(lr) else (lambda step: float(lr))
    score = EpochScores(x, y, x_test, y_test, ce, rate_at, steps_per_epoch)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=[score], shuffle=False)
    seconds = time.perf_counter() - start
    return {"replicas": replicas, "global_batch": global_batch, "steps_per_epoch": steps_per_epoch,
            "test_accuracy": score.accs, "reported_loss": score.losses, "learning_rate": score.rates,
            "train_loss_by_epoch": score.train_losses,
            "steps": [steps_per_epoch * (e + 1) for e in range(epochs)],
            "train_loss": float(ce(y, model(x, training=False))),
            "test_loss": float(ce(y_test, model(x_test, training=False))), "seconds": seconds,
            "weights": [np.asarray(w) for w in model.get_weights()]}


class EpochScores(keras.callbacks.Callback):
    """train_for_accuracy's callback: after each epoch the test accuracy, fit's reported loss, the training
    loss in inference mode and the learning rate of the epoch's last step."""

    def __init__(self, x, y, x_test, y_test, loss_fn, rate_at: Callable, steps_per_epoch: int):
        super().__init__()
        self.data, self.loss_fn = (x, y, x_test, y_test), loss_fn
        self.rate_at, self.steps_per_epoch = rate_at, steps_per_epoch
        self.accs, self.losses, self.train_losses, self.rates = [], [], [], []

    def on_epoch_end(self, epoch, logs=None):
        x, y, x_test, y_test = self.data
        self.accs.append(float(np.mean(np.argmax(np.asarray(self.model(x_test, training=False)), 1) == y_test)))
        self.losses.append(float(logs["loss"]))
        self.train_losses.append(float(self.loss_fn(y, self.model(x, training=False))))
        self.rates.append(self.rate_at((epoch + 1) * self.steps_per_epoch))


# --------------------------------------------------------------------------- step-time model


def ring_allreduce_seconds(n_bytes: float, replicas: np.ndarray, bandwidth_bytes_per_s: float,
                           latency_s: float = 0.0) -> np.ndarray:
    """Time of a ring all-reduce of n_bytes over k replicas: 2(k-1)/k · bytes/bandwidth + 2(k-1)·latency.

    replicas: array of k (shape (K,)); returns seconds, shape (K,). Zero at k = 1.
    """
    k = np.asarray(replicas, dtype=float)
    return 2 * (k - 1) / k * n_bytes / bandwidth_bytes_per_s + 2 * (k - 1) * latency_s


def step_time_model(compute_s: float, n_bytes: float, replicas: np.ndarray, bandwidth_bytes_per_s: float,
                    latency_s: float = 0.0, *, scaling: str = "strong", overlap: float = 0.0) -> np.ndarray:
    """Seconds per synchronous step on k replicas, shape (K,).

    compute_s: forward + backward time of one device's batch at k = 1.
    scaling="strong": a fixed global batch, split k ways: compute_s / k per replica.
    scaling="weak": a fixed per-replica batch (the global batch grows with k): compute_s per replica.
    overlap (0–1): the fraction of the all-reduce hidden behind the backward pass
    (gradients of late layers are sent while early layers are still differentiated); at most
    the compute time can hide it. Step = compute + max(all-reduce − overlap·compute, (1 − overlap)·all-reduce).
    """
    k = np.asarray(replicas, dtype=float)
    if scaling == "strong":
        compute = compute_s / k
    elif scaling == "weak":
        compute = np.full_like(k, compute_s)
    else:
        raise ValueError(f"scaling must be 'strong' or 'weak', got {scaling!r}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    comm = ring_allreduce_seconds(n_bytes, k, bandwidth_bytes_per_s, latency_s)
    exposed = np.maximum(comm - overlap * compute, (1.0 - overlap) * comm)
    return compute + exposed


def throughput_speedup(compute_s: float, n_bytes: float, replicas: np.ndarray, bandwidth_bytes_per_s: float,
                       *, scaling: str, overlap: float = 0.0) -> np.ndarray:
    """Examples per second on k replicas relative to one device, shape (K,).

    strong: the same global batch per step, so speed-up = t(1) / t(k).
    weak: k times the examples per step, so speed-up = k · t(1) / t(k).
    """
    k = np.asarray(replicas, dtype=float)
    t1 = step_time_model(compute_s, n_bytes, np.array([1.0]), bandwidth_bytes_per_s, scaling=scaling, overlap=overlap)[0]
    tk = step_time_model(compute_s, n_bytes, k, bandwidth_bytes_per_s, scaling=scaling, overlap=overlap)
    return (k if scaling == "weak" else 1.0) * t1 / tk
