"""One seeded training run of the LSTM tagger with one remedy (lesson 06).

    REMEDIES            the remedy names train_run understands
    make_split(...)     train / monitor / test series from one generator seed
    TaggerTrainer       one XLA-compiled weighted training step shared by every run
    train_run(...)      one run → RunResult (per-step losses, gradient norms, monitored loss, flags, metrics)
    replay_until_spike  the same weighted run replayed with the lesson's snapshots, up to its first spike
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import imbalanced as imb
from .flags import flag_spikes, jumps_above_median, running_median_ratio


REMEDIES = ("plain_bce", "weighted", "clip", "lower_lr", "prior_bias", "focal",
            "normalised_weights", "windows")


@dataclass
class RunResult:
    """One training run. Per-step arrays: batch_loss (exact), grad_norm (before clipping);
    monitored: monitor_steps, monitor_loss; spikes: the flags on monitor_loss."""
    remedy: str
    seed: int
    learning_rate: float
    positive_weight: float
    clipnorm: float | None
    seconds: float
    batch_loss: np.ndarray
    grad_norm: np.ndarray
    batch_positives: np.ndarray
    monitor_steps: np.ndarray
    monitor_loss: np.ndarray
    spikes: np.ndarray
    max_monitored_ratio: float
    max_monitored_jump: float
    max_batch_ratio: float
    metrics: dict = field(default_factory=dict)

    @property
    def spiked(self) -> bool:
        return bool(self.spikes.any())

    def summary(self) -> dict:
        return {"remedy": self.remedy, "seed": self.seed, "learning_rate": self.learning_rate,
                "positive_weight": self.positive_weight, "clipnorm": self.clipnorm,
                "spiked": self.spiked, "n_spikes": int(self.spikes.sum()),
                "max_monitored_ratio": self.max_monitored_ratio,
                "max_monitored_jump": self.max_monitored_jump,
                "max_batch_ratio": self.max_batch_ratio, "seconds": self.seconds, **self.metrics}


@dataclass
class DataSplit:
    """train / monitor / test Series drawn from one generator seed."""
    train: imb.Series
    monitor: imb.Series
    test: imb.Series


def make_split(n_series: int, timesteps: int, *, frac_series_with_anomaly: float = 0.2,
               anomalies_per_series: int = 2, label_jitter: float = 0.0, seed: int = 0,
               amplitude: float = 2.0, monitor_series: int = 32, test_fraction: float = 0.25) -> DataSplit:
    """Series from make_series(seed), split by series into train / test, and a
    fixed monitoring set of `monitor_series` extra series (same generator,
    seed + 10_000) that always holds anomalous series in the data's proportion."""
    data = imb.make_series(n_series, timesteps, frac_series_with_anomaly=frac_series_with_anomaly,
                           anomalies_per_series=anomalies_per_series, label_jitter=label_jitter,
                           amplitude=amplitude, seed=seed)
    train, test = imb.train_test_split(data, test_fraction, seed=seed)
    monitor = imb.make_series(monitor_series, timesteps, frac_series_with_anomaly=frac_series_with_anomaly,
                              anomalies_per_series=anomalies_per_series, label_jitter=label_jitter,
                              amplitude=amplitude, seed=seed + 10_000)
    return DataSplit(train, monitor, test)


def per_step_loss(y, p, w, *, alpha=(1.0, 1.0), gamma=0.0, normalise=False):
    """The default loss of every run: per step l = α_t (1−p_t)^γ · BCE(y, p), weighted by w (B, T) and
    reduced as Σ(w·l)/(B·T) (Keras's default) or Σ(w·l)/Σw (normalise). γ = 0, α = (1, 1): weighted BCE.
    Lesson 06 writes the same function on its page and passes it in (TaggerTrainer(loss=...))."""
    import tensorflow as tf
    p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
    bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * alpha[0] + (1 - y) * alpha[1]
    wl = w * alpha_t * tf.pow(1 - p_t, gamma) * bce
    n = tf.cast(normalise, tf.float32)
    denom = n * tf.reduce_sum(w) + (1 - n) * tf.cast(tf.size(wl), tf.float32)
    return tf.reduce_sum(wl) / denom


def adam_step(model, optimizer, x, y, w, *, loss_fn, clipnorm=None):
    """The default training step: loss_fn(y, p, w) under a GradientTape, the gradients' global norm (before
    clipping), optional clipping by global norm, one optimizer update. Returns (loss, norm) as tensors."""
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True)[..., 0], w)
    grads = tape.gradient(loss, model.trainable_variables)
    norm = tf.linalg.global_norm(grads)
    if clipnorm is not None:
        grads, _ = tf.clip_by_global_norm(grads, clipnorm, use_norm=norm)
    optimizer.apply(grads, model.trainable_variables)
    return loss, norm


class TaggerTrainer:
    """A reusable training loop for the LSTM tagger: one XLA-compiled step shared
    by every run with the same units, loss and step (compiling costs seconds on a CPU; a
    run costs a fraction of that per epoch), so a sweep over seeds, learning
    rates, weights and remedies pays for compilation once per sequence length.

    The loss and the step are arguments: `loss(y, p, w, *, alpha, gamma, normalise)` (default
    per_step_loss) and `step(model, optimizer, x, y, w, *, loss_fn, clipnorm)` (default adam_step,
    which returns the loss and the gradient norm before clipping). The loop computes the loss
    itself, so per-batch losses and gradient norms are exact, not Keras's running mean. Adam.
    jit_compile: XLA (the default; fastest for the small batches of the sweeps) or a plain graph,
    whose cost on a CPU hardly grows with the batch (the asker's batch of 128, helpers.spikes.asker).
    """

    NO_CLIP = 1e9

    def __init__(self, units: int = 16, *, loss=None, step=None, jit_compile: bool = True,
                 adam: dict | None = None):
        import keras
        import tensorflow as tf
        self.units = units
        self.loss = loss or per_step_loss
        self.train_step = step or adam_step
        self.model = imb.lstm_tagger(units, 2, seed=0)
        self.adam = dict(adam or {})   # Adam's other settings (epsilon, beta_2, amsgrad): fixed when traced
        self.optimizer = keras.optimizers.Adam(1e-3, **self.adam)
        self.optimizer.build(self.model.trainable_variables)
        model, opt, loss_of, train_step = self.model, self.optimizer, self.loss, self.train_step

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def step(x, y, w, alpha_pos, alpha_neg, gamma, normalise, clip):
            def loss_fn(y_, p_, w_):
                return loss_of(y_, p_, w_, alpha=(alpha_pos, alpha_neg), gamma=gamma, normalise=normalise)
            return train_step(model, opt, x, y, w, loss_fn=loss_fn, clipnorm=clip)

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def monitored(x, y, w):
            p = tf.clip_by_value(model(x, training=False)[..., 0], 1e-7, 1 - 1e-7)
            bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
            return tf.reduce_mean(w * bce)

        @tf.function(reduce_retracing=True)  # no XLA: every input size would compile anew
        def predict(x):
            return model(x, training=False)[..., 0]

        self._step, self._monitored, self._predict = step, monitored, predict

    def reset(self, seed: int, learning_rate: float, output_bias: float | None = None) -> None:
        """Fresh seeded weights (as lstm_tagger(seed=seed) would draw them), zeroed Adam state."""
        import keras
        keras.utils.set_random_seed(seed)
        fresh = imb.lstm_tagger(self.units, 2, output_bias=output_bias, seed=seed)
        self.model.set_weights(fresh.get_weights())
        for v in self.optimizer.variables:
            v.assign(np.zeros(v.shape, v.dtype))
        self.optimizer.learning_rate = learning_rate

    def steps(self, batches, *, clipnorm: float | None = None) -> np.ndarray:
        """Run the compiled weighted step (Keras's mean reduction, no focal terms) on each
        (x (B, T, 1), y (B, T), w (B, T)) of `batches`; returns the per-step losses. Used to
        check that this loop computes what the lesson's own train_step computes."""
        import tensorflow as tf
        consts = [tf.constant(v, tf.float32) for v in (1.0, 1.0, 0.0, 0.0, clipnorm if clipnorm else self.NO_CLIP)]
        return np.array([float(self._step(x, y, w, *consts)[0]) for x, y, w in batches])

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, T) for x (N, T, 1)."""
        return np.concatenate([np.asarray(self._predict(x[i:i + batch_size]))
                               for i in range(0, len(x), batch_size)])

    def fit(self, x, y, w, *, epochs: int, batch_size: int, seed: int, monitor: tuple,
            monitor_every: int = 2, alpha=(1.0, 1.0), gamma: float = 0.0, normalise: bool = False,
            clipnorm: float | None = None, progress: bool = False, desc: str = "training",
            before_step=None, after_step=None) -> dict:
        """Shuffled mini-batches (the last partial batch dropped, so every step has
        the same shape), `epochs` passes. monitor = (x_m, y_m, w_m): the fixed
        set scored every `monitor_every` steps. Returns per-step batch_loss and
        grad_norm, and monitor_steps / monitor_loss.

        Optional hooks, which leave the training itself unchanged: before_step(x_b, y_b, w_b) is
        called before every step; after_step(step) after it (1-based), and a true return value
        ends the run there."""
        import tensorflow as tf
        from tqdm.auto import tqdm
        rng = np.random.default_rng(seed)
        xm, ym, wm = (tf.constant(a, tf.float32) for a in monitor)
        consts = [tf.constant(v, tf.float32) for v in (alpha[0], alpha[1], gamma, float(normalise),
                                                       clipnorm if clipnorm else self.NO_CLIP)]
        losses, norms, positives = [], [], []
        mon_steps, mon_loss = [0], [float(self._monitored(xm, ym, wm))]
        n_batches = len(x) // batch_size
        step = 0
        stopped = False
        for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=True):
            order = rng.permutation(len(x))
            for b in range(n_batches):
                idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
                if before_step is not None:
                    before_step(x[idx], y[idx], w[idx])
                loss, norm = self._step(x[idx], y[idx], w[idx], *consts)
                losses.append(float(loss))
                norms.append(float(norm))
                positives.append(int(y[idx].sum()))
                step += 1
                if step % monitor_every == 0:
                    mon_steps.append(step)
                    mon_loss.append(float(self._monitored(xm, ym, wm)))
                if after_step is not None and after_step(step):
                    stopped = True
                    break
            if stopped:
                break
        return {"batch_loss": np.array(losses), "grad_norm": np.array(norms),
                "batch_positives": np.array(positives),
                "monitor_steps": np.array(mon_steps), "monitor_loss": np.array(mon_loss)}


_TRAINERS: dict[tuple, TaggerTrainer] = {}


def trainer_for(units: int, *, loss=None, step=None, jit_compile: bool = True,
                adam: dict | None = None) -> TaggerTrainer:
    """The process-wide TaggerTrainer for `units`, this loss and step (None: the defaults), jit_compile
    and Adam's settings `adam` (e.g. {"epsilon": 1e-3}), compiled once per input shape."""
    key = (units, loss or per_step_loss, step or adam_step, bool(jit_compile), tuple(sorted((adam or {}).items())))
    if key not in _TRAINERS:
        _TRAINERS[key] = TaggerTrainer(units, loss=loss, step=step, jit_compile=jit_compile, adam=adam)
    return _TRAINERS[key]


def train_run(split: DataSplit, *, remedy: str = "weighted", learning_rate: float = 1e-2,
              positive_weight: float = 500.0, epochs: int = 10, batch_size: int = 32,
              clipnorm: float | None = None, units: int = 16, seed: int = 0,
              lower_lr_factor: float = 0.3, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
              window: int = 64, window_weight: float = 10.0, monitor_every: int = 2,
              spike_ratio: float = 3.0, spike_min_jump: float = 0.02, progress: bool = False,
              desc: str | None = None, loss=None, step=None) -> tuple[RunResult, object]:
    """Train one seeded LSTM tagger with one remedy; return (RunResult, model).

    remedy: plain_bce (no weights) | weighted (w on anomalous steps, mean
    reduction as Keras) | clip (weighted + clipping by global norm `clipnorm`)
    | lower_lr (weighted, lr × lower_lr_factor) | prior_bias (weighted, output
    bias log(π/(1−π))) | focal (α-balanced focal loss, α really applied, no
    extra weights) | normalised_weights (Σ(w·l)/Σw per batch) | windows
    (windows of `window` steps around the anomalies plus random ones, weight
    `window_weight`).
    The monitored loss is the same quantity for every remedy — weighted BCE
    mean(w·l) with w = positive_weight on the fixed monitoring set — so jumps
    are compared on one scale. Metrics are computed on split.test.
    The returned model is shared by later runs of the same `units`: use it
    (or the RunResult's metrics) before the next run.
    loss, step: the per-step loss and the training step (TaggerTrainer's arguments; None: the
    defaults per_step_loss and adam_step).
    """
    if remedy not in REMEDIES:
        raise ValueError(f"remedy must be one of {REMEDIES}, got {remedy!r}")
    tr = split.train
    lr = learning_rate * (lower_lr_factor if remedy == "lower_lr" else 1.0)
    trainer = trainer_for(units, loss=loss, step=step)
    trainer.reset(seed, lr, imb.prior_bias(tr.y) if remedy == "prior_bias" else None)
    x, y = tr.x, tr.y
    kwargs: dict = {}
    w = imb.timestep_weights(y, positive_weight)
    if remedy == "plain_bce":
        w = np.ones_like(w)
    elif remedy == "clip":
        kwargs["clipnorm"] = clipnorm
    elif remedy == "focal":
        w = np.ones_like(w)
        kwargs.update(alpha=(focal_alpha, 1 - focal_alpha), gamma=focal_gamma)
    elif remedy == "normalised_weights":
        kwargs["normalise"] = True
    elif remedy == "windows":
        win = imb.anomaly_windows(tr, min(window, tr.timesteps), seed=seed)
        x, y = win.x, win.y
        w = imb.timestep_weights(y, window_weight)
    mon = split.monitor
    monitor = (mon.x, mon.y, imb.timestep_weights(mon.y, positive_weight))
    if remedy == "windows":  # same number of optimizer steps as the full-series runs
        epochs = max(1, int(round(epochs * (len(tr.x) // batch_size) / max(len(x) // batch_size, 1))))
    start = time.perf_counter()
    log = trainer.fit(x, y, w, epochs=epochs, batch_size=batch_size, seed=seed, monitor=monitor,
                      monitor_every=monitor_every, progress=progress,
                      desc=desc or f"{remedy} seed {seed}", **kwargs)
    seconds = time.perf_counter() - start
    p_test = trainer.predict(split.test.x)
    metrics = imb.detection_report(split.test.y, p_test)
    ml = log["monitor_loss"]
    ratios = running_median_ratio(ml)
    flags = flag_spikes(ml, ratio=spike_ratio, min_jump=spike_min_jump)
    jumps = jumps_above_median(ml)
    bl = log["batch_loss"]
    res = RunResult(remedy=remedy, seed=seed, learning_rate=lr, positive_weight=positive_weight,
                    clipnorm=clipnorm if remedy == "clip" else None, seconds=seconds,
                    batch_loss=bl, grad_norm=log["grad_norm"], batch_positives=log["batch_positives"],
                    monitor_steps=log["monitor_steps"], monitor_loss=ml, spikes=flags,
                    max_monitored_ratio=float(np.nanmax(ratios)) if np.isfinite(ratios).any() else 1.0,
                    max_monitored_jump=float(np.max(jumps)) if len(jumps) else 0.0,
                    max_batch_ratio=float(np.nanmax(running_median_ratio(bl))) if len(bl) > 3 else 1.0,
                    metrics=metrics)
    return res, trainer.model


def replay_until_spike(split: DataSplit, *, learning_rate: float, positive_weight: float, seed: int,
                       snapshot, is_spike, epochs: int = 30, batch_size: int = 32, units: int = 16,
                       monitor_every: int = 2, after: int = 2, loss=None, step=None) -> dict:
    """Replay the weighted run train_run(split, remedy="weighted", ...) would train — the same
    TaggerTrainer.fit loop, seeded weights and batch order — keeping `snapshot(model, optimizer)` (the
    lesson's own function) before every step, and stop `after` steps past the first monitored point
    that `is_spike(previous, value)` (the lesson's rule) flags. The monitored loss is also scored
    after every step, so the update that lifted it can be found. Returns snapshots (before each step,
    then the last state), batches (x, y, w), batch_loss, grad_norm, monitor_loss (before step 1 and
    after every step), flagged_step (1-based, None if the run never spiked) and the trainer (its
    model and optimizer hold the last state; the next train_run resets them)."""
    import tensorflow as tf
    trainer = trainer_for(units, loss=loss, step=step)
    trainer.reset(seed, learning_rate)
    mon = split.monitor
    w_mon = imb.timestep_weights(mon.y, positive_weight)
    xm, ym, wm = (tf.constant(a, tf.float32) for a in (mon.x, mon.y, w_mon))
    snaps, batches = [], []
    mon_all = [float(trainer._monitored(xm, ym, wm))]
    flagged = None

    def before(xb, yb, wb):
        snaps.append(snapshot(trainer.model, trainer.optimizer))
        batches.append((xb, yb, wb))

    def after_step(step):
        nonlocal flagged
        mon_all.append(float(trainer._monitored(xm, ym, wm)))
        if flagged is None and step % monitor_every == 0:
            monitored = mon_all[::monitor_every]
            if is_spike(monitored[:-1], monitored[-1]):
                flagged = step
        return flagged is not None and step >= flagged + after

    out = trainer.fit(split.train.x, split.train.y, imb.timestep_weights(split.train.y, positive_weight),
                      epochs=epochs, batch_size=batch_size, seed=seed, monitor=(mon.x, mon.y, w_mon),
                      monitor_every=monitor_every, before_step=before, after_step=after_step)
    snaps.append(snapshot(trainer.model, trainer.optimizer))
    return {"snapshots": snaps, "batches": batches, "batch_loss": out["batch_loss"], "grad_norm": out["grad_norm"],
            "monitor_loss": np.array(mon_all), "flagged_step": flagged, "monitor_every": monitor_every,
            "trainer": trainer}
