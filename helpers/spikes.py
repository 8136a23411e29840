"""Measuring loss spikes without fooling yourself (lesson 06).

    SpikeInspector      Keras callback: true per-batch losses (undoing Keras 3's
                        running mean in logs["loss"]), per-batch gradient norms,
                        and the loss on a fixed monitoring set every few steps
    flag_spikes(...)    a spike = ratio to the running median of the previous
                        points ≥ ratio AND an absolute jump ≥ min_jump
    loss_breakdown(...) which series / timesteps carry a batch's loss
    train_run(...)      one seeded training run (data, remedy, lr, weight) → RunResult
    spike_map_cell(...) one cell of the spike map: several seeds, spike flags
    wilson_interval     confidence interval for a fraction of seeds

Command line (the committed spike map):

    python -m helpers.spikes sweep --out data/spike_map.csv --seeds 10 \\
        --learning-rates 0.001,0.01,0.03,0.1 --positive-weights 30,neg/pos
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import imbalanced as imb

# ---------------------------------------------------------------- spike flags


def running_median_ratio(values: np.ndarray, window: int = 10) -> np.ndarray:
    """ratio[k] = values[k] / median(values[k-window:k]); NaN for k < 3 (too few points)."""
    v = np.asarray(values, np.float64)
    out = np.full(v.shape, np.nan)
    for k in range(3, len(v)):
        ref = np.median(v[max(0, k - window):k])
        out[k] = v[k] / ref if ref > 0 else np.nan
    return out


def flag_spikes(values: np.ndarray, *, window: int = 10, ratio: float = 3.0,
                min_jump: float = 0.02) -> np.ndarray:
    """Boolean mask (len(values),): True where values[k] is ≥ `ratio` times the median
    of the previous `window` points AND exceeds that median by ≥ `min_jump`
    (in loss units). Both: a ratio alone flags tiny wiggles once the loss is
    near 0; a jump alone flags the normal fast descent at the start."""
    v = np.asarray(values, np.float64)
    r = running_median_ratio(v, window)
    flags = np.zeros(v.shape, bool)
    for k in range(3, len(v)):
        ref = np.median(v[max(0, k - window):k])
        flags[k] = bool(np.isfinite(r[k]) and r[k] >= ratio and v[k] - ref >= min_jump)
    return flags


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial fraction successes/n."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def inspected_tagger(units: int = 32, layers: int = 2, *, output_bias: float | None = None,
                     seed: int | None = None):
    """lstm_tagger whose train_step also logs `grad_norm`, the global norm of the
    batch's gradient *before* any clipping. Same maths as model.fit otherwise
    (compute_loss, optimizer.apply, loss tracker weighted by batch size)."""
    import keras
    import tensorflow as tf

    base = imb.lstm_tagger(units, layers, output_bias=output_bias, seed=seed)

    class InspectedTagger(keras.Model):
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

    return InspectedTagger(base.inputs, base.outputs, name="inspected_tagger")


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


# ---------------------------------------------------------------- one run


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


class TaggerTrainer:
    """A reusable training loop for the LSTM tagger: one XLA-compiled step shared
    by every run with the same units (compiling costs seconds on a CPU; a
    run costs a fraction of that per epoch), so a sweep over seeds, learning
    rates, weights and remedies pays for compilation once per sequence length.

    The step computes the loss itself — per step l = α_t (1−p_t)^γ · BCE(y, p),
    weighted by w (N, T), reduced as Σ(w·l)/(N·T) (Keras's default) or
    Σ(w·l)/Σw — so per-batch losses and gradient norms (before clipping) are
    exact, not Keras's running mean. Adam, optional clipping by global norm.
    """

    NO_CLIP = 1e9

    def __init__(self, units: int = 16):
        import keras
        import tensorflow as tf
        self.units = units
        self.model = imb.lstm_tagger(units, 2, seed=0)
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.optimizer.build(self.model.trainable_variables)
        model, opt = self.model, self.optimizer

        @tf.function(jit_compile=True, reduce_retracing=True)
        def step(x, y, w, alpha_pos, alpha_neg, gamma, normalise, clip):
            with tf.GradientTape() as tape:
                p = tf.clip_by_value(model(x, training=True)[..., 0], 1e-7, 1 - 1e-7)
                bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
                p_t = y * p + (1 - y) * (1 - p)
                alpha_t = y * alpha_pos + (1 - y) * alpha_neg
                wl = w * alpha_t * tf.pow(1 - p_t, gamma) * bce
                denom = normalise * tf.reduce_sum(w) + (1 - normalise) * tf.cast(tf.size(wl), tf.float32)
                loss = tf.reduce_sum(wl) / denom
            grads = tape.gradient(loss, model.trainable_variables)
            norm = tf.linalg.global_norm(grads)
            grads, _ = tf.clip_by_global_norm(grads, clip, use_norm=norm)
            opt.apply(grads, model.trainable_variables)
            return loss, norm

        @tf.function(jit_compile=True, reduce_retracing=True)
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

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, T) for x (N, T, 1)."""
        return np.concatenate([np.asarray(self._predict(x[i:i + batch_size]))
                               for i in range(0, len(x), batch_size)])

    def fit(self, x, y, w, *, epochs: int, batch_size: int, seed: int, monitor: tuple,
            monitor_every: int = 2, alpha=(1.0, 1.0), gamma: float = 0.0, normalise: bool = False,
            clipnorm: float | None = None, progress: bool = False, desc: str = "training") -> dict:
        """Shuffled mini-batches (the last partial batch dropped, so every step has
        the same shape), `epochs` passes. monitor = (x_m, y_m, w_m): the fixed
        set scored every `monitor_every` steps. Returns per-step batch_loss and
        grad_norm, and monitor_steps / monitor_loss."""
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
        for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=True):
            order = rng.permutation(len(x))
            for b in range(n_batches):
                idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
                loss, norm = self._step(x[idx], y[idx], w[idx], *consts)
                losses.append(float(loss))
                norms.append(float(norm))
                positives.append(int(y[idx].sum()))
                step += 1
                if step % monitor_every == 0:
                    mon_steps.append(step)
                    mon_loss.append(float(self._monitored(xm, ym, wm)))
        return {"batch_loss": np.array(losses), "grad_norm": np.array(norms),
                "batch_positives": np.array(positives),
                "monitor_steps": np.array(mon_steps), "monitor_loss": np.array(mon_loss)}


_TRAINERS: dict[int, TaggerTrainer] = {}


def trainer_for(units: int) -> TaggerTrainer:
    """The process-wide TaggerTrainer for `units` (compiled once per input shape)."""
    if units not in _TRAINERS:
        _TRAINERS[units] = TaggerTrainer(units)
    return _TRAINERS[units]


def train_run(split: DataSplit, *, remedy: str = "weighted", learning_rate: float = 1e-2,
              positive_weight: float = 500.0, epochs: int = 10, batch_size: int = 32,
              clipnorm: float | None = None, units: int = 16, seed: int = 0,
              lower_lr_factor: float = 0.3, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
              window: int = 64, window_weight: float = 10.0, monitor_every: int = 2,
              spike_ratio: float = 3.0, spike_min_jump: float = 0.02, progress: bool = False,
              desc: str | None = None) -> tuple[RunResult, object]:
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
    """
    if remedy not in REMEDIES:
        raise ValueError(f"remedy must be one of {REMEDIES}, got {remedy!r}")
    tr = split.train
    lr = learning_rate * (lower_lr_factor if remedy == "lower_lr" else 1.0)
    trainer = trainer_for(units)
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
    jumps = _jumps(ml)
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


def _jumps(values: np.ndarray, window: int = 10) -> np.ndarray:
    v = np.asarray(values, np.float64)
    return np.array([v[k] - np.median(v[max(0, k - window):k]) for k in range(3, len(v))])


# ---------------------------------------------------------------- spike map


SWEEP_DEFAULTS = dict(n_series=300, timesteps=128, frac_series_with_anomaly=0.2, anomalies_per_series=2,
                      label_jitter=0.0, amplitude=2.0, epochs=30, batch_size=32, units=16, monitor_series=32)


def spike_map_cell(learning_rate: float, positive_weight: float | str, seeds, *, progress: bool = False,
                   **overrides) -> list[dict]:
    """Run one (learning rate, positive weight) cell of the spike map for each
    seed (data, split and initialisation all from that seed). positive_weight
    may be "neg/pos" (computed from that seed's training labels). Returns one
    row per seed: spiked, max ratio / jump, PR-AUC, seconds."""
    cfg = {**SWEEP_DEFAULTS, **overrides}
    rows = []
    for seed in seeds:
        split = make_split(cfg["n_series"], cfg["timesteps"],
                           frac_series_with_anomaly=cfg["frac_series_with_anomaly"],
                           anomalies_per_series=cfg["anomalies_per_series"],
                           label_jitter=cfg["label_jitter"], amplitude=cfg["amplitude"], seed=seed,
                           monitor_series=cfg["monitor_series"])
        w = imb.positive_weight_for(split.train.y) if positive_weight == "neg/pos" else float(positive_weight)
        res, _ = train_run(split, remedy="weighted", learning_rate=learning_rate, positive_weight=w,
                           epochs=cfg["epochs"], batch_size=cfg["batch_size"], units=cfg["units"],
                           seed=seed, progress=progress)
        rows.append({"learning_rate": learning_rate, "positive_weight": str(positive_weight),
                     "weight_value": round(w, 3), "seed": seed, "spiked": int(res.spiked),
                     "n_spikes": int(res.spikes.sum()),
                     "max_monitored_ratio": round(res.max_monitored_ratio, 4),
                     "max_monitored_jump": round(res.max_monitored_jump, 5),
                     "max_batch_ratio": round(res.max_batch_ratio, 3),
                     "pr_auc": round(res.metrics["pr_auc"], 4),
                     "event_recall": round(res.metrics["event_recall"], 4),
                     "seconds": round(res.seconds, 2)})
    return rows


SWEEP_COLUMNS = ["learning_rate", "positive_weight", "weight_value", "seed", "spiked", "n_spikes",
                 "max_monitored_ratio", "max_monitored_jump", "max_batch_ratio", "pr_auc",
                 "event_recall", "seconds"]


def read_spike_map(path: str | Path) -> list[dict]:
    """Rows of a spike-map CSV (numbers parsed; positive_weight kept as written)."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                if k == "positive_weight":
                    rec[k] = v
                elif k in ("seed", "spiked", "n_spikes"):
                    rec[k] = int(v)
                else:
                    rec[k] = float(v)
            out.append(rec)
    return out


def summarise_spike_map(rows: list[dict]) -> list[dict]:
    """Per (learning_rate, positive_weight) cell: seeds, spiked seeds, fraction,
    95% Wilson interval, median max ratio, median PR-AUC."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["learning_rate"], r["positive_weight"]), []).append(r)
    out = []
    for (lr, w), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], _weight_key(kv[0][1]))):
        k = sum(r["spiked"] for r in rs)
        lo, hi = wilson_interval(k, len(rs))
        out.append({"learning_rate": lr, "positive_weight": w, "seeds": len(rs), "spiked": k,
                    "fraction": k / len(rs), "ci_low": lo, "ci_high": hi,
                    "median_max_ratio": float(np.median([r["max_monitored_ratio"] for r in rs])),
                    "median_pr_auc": float(np.median([r["pr_auc"] for r in rs]))})
    return out


def label_remedy_rows(rows: list[dict]) -> list[dict]:
    """Copy of remedies-CSV rows with a `label`: the remedy name, and for the
    clip runs of one seed "clip (higher)" / "clip (lower)" by threshold."""
    out = [dict(r) for r in rows]
    by_seed: dict[int, list[dict]] = {}
    for r in out:
        r["label"] = r["remedy"]
        if r["remedy"] == "clip":
            by_seed.setdefault(r["seed"], []).append(r)
    for clips in by_seed.values():
        clips.sort(key=lambda r: -float(r["clipnorm"]))
        names = ["clip (higher)", "clip (lower)"] + [f"clip #{k}" for k in range(3, len(clips) + 1)]
        for r, name in zip(clips, names):
            r["label"] = name
    return out


def summarise_remedies(rows: list[dict]) -> list[dict]:
    """Per remedy over seeds: spiked seeds, median / max monitored ratio and
    jump, median and worst PR-AUC and event recall, and two paired counts
    against the weighted baseline of the same seed: seeds where the remedy's
    max monitored ratio is lower, and seeds where its PR-AUC is within 0.01."""
    rows = label_remedy_rows(rows)
    base = {r["seed"]: r for r in rows if r["label"] == "weighted"}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    out = []
    for label in labels:
        rs = [r for r in rows if r["label"] == label]
        paired = [r for r in rs if r["seed"] in base]
        k = sum(int(r["spiked"]) for r in rs)
        out.append({
            "remedy": label, "seeds": len(rs), "spiked_seeds": k, "spike_fraction": k / len(rs),
            "median_max_ratio": float(np.median([r["max_monitored_ratio"] for r in rs])),
            "max_ratio": float(np.max([r["max_monitored_ratio"] for r in rs])),
            "median_max_jump": float(np.median([r["max_monitored_jump"] for r in rs])),
            "median_pr_auc": float(np.median([r["pr_auc"] for r in rs])),
            "worst_pr_auc": float(np.min([r["pr_auc"] for r in rs])),
            "median_event_recall": float(np.median([r["event_recall"] for r in rs])),
            "seeds_ratio_below_baseline": sum(r["max_monitored_ratio"] < base[r["seed"]]["max_monitored_ratio"]
                                              for r in paired),
            "seeds_pr_auc_within_0.01": sum(r["pr_auc"] >= base[r["seed"]]["pr_auc"] - 0.01 for r in paired),
            "median_seconds": float(np.median([r["seconds"] for r in rs])),
        })
    return out


def choose_remedy(summary: list[dict], max_pr_auc_loss: float = 0.02) -> dict:
    """The remedy with the fewest spiked seeds among those whose median PR-AUC is
    within `max_pr_auc_loss` of the baseline's; ties → more seeds with a lower
    ratio than the baseline, then higher median PR-AUC. Returns its summary row."""
    base = next(r for r in summary if r["remedy"] == "weighted")
    ok = [r for r in summary if r["remedy"] != "weighted"
          and r["median_pr_auc"] >= base["median_pr_auc"] - max_pr_auc_loss]
    if not ok:
        return base
    return min(ok, key=lambda r: (r["spike_fraction"], -r["seeds_ratio_below_baseline"], -r["median_pr_auc"]))


def _weight_key(w: str) -> float:
    try:
        return float(w)
    except ValueError:
        return float("inf")


def _parse_weights(text: str) -> list:
    return [w if w == "neg/pos" else float(w) for w in text.split(",")]


REMEDY_COLUMNS = ["remedy", "clipnorm", "seed", "learning_rate", "positive_weight", "spiked", "n_spikes",
                  "max_monitored_ratio", "max_monitored_jump", "max_batch_ratio", "pr_auc",
                  "recall_at_p0.5", "event_recall", "false_alarms_per_series", "seconds"]


def remedy_runs(seed: int, learning_rate: float, *, clip_percentiles=(50, 10), clip_norms=None,
                progress: bool = False, desc_prefix: str = "", **overrides) -> tuple[list[RunResult], dict]:
    """Every remedy on one seed's data, at one learning rate, w = neg/pos.

    The clipping thresholds are percentiles (`clip_percentiles`) of the gradient
    norms observed in that seed's unclipped weighted run, so they bite on
    about half / most of the steps, unless `clip_norms` gives them. Returns (results in REMEDIES order with one
    result per clip threshold, {"clip_thresholds": [...], "positive_weight": w}).
    """
    cfg = {**SWEEP_DEFAULTS, **overrides}
    split = make_split(cfg["n_series"], cfg["timesteps"], frac_series_with_anomaly=cfg["frac_series_with_anomaly"],
                       anomalies_per_series=cfg["anomalies_per_series"], label_jitter=cfg["label_jitter"],
                       amplitude=cfg["amplitude"], seed=seed, monitor_series=cfg["monitor_series"])
    w = imb.positive_weight_for(split.train.y)
    common = dict(learning_rate=learning_rate, positive_weight=w, epochs=cfg["epochs"],
                  batch_size=cfg["batch_size"], units=cfg["units"], seed=seed, progress=progress)
    results = []
    base, _ = train_run(split, remedy="weighted", desc=f"{desc_prefix}weighted", **common)
    results.append(base)
    clips = ([float(c) for c in clip_norms] if clip_norms
             else [float(np.percentile(base.grad_norm, q)) for q in clip_percentiles])
    for c in clips:
        results.append(train_run(split, remedy="clip", clipnorm=c, desc=f"{desc_prefix}clip {c:.2g}", **common)[0])
    for remedy in ("lower_lr", "prior_bias", "focal", "normalised_weights", "windows"):
        results.append(train_run(split, remedy=remedy, desc=f"{desc_prefix}{remedy}", **common)[0])
    return results, {"clip_thresholds": clips, "positive_weight": w}


def remedy_row(res: RunResult) -> dict:
    """One CSV row (REMEDY_COLUMNS) of a remedy run."""
    m = res.metrics
    return {"remedy": res.remedy, "clipnorm": "" if res.clipnorm is None else round(res.clipnorm, 5),
            "seed": res.seed, "learning_rate": res.learning_rate, "positive_weight": round(res.positive_weight, 3),
            "spiked": int(res.spiked), "n_spikes": int(res.spikes.sum()),
            "max_monitored_ratio": round(res.max_monitored_ratio, 4),
            "max_monitored_jump": round(res.max_monitored_jump, 5),
            "max_batch_ratio": round(res.max_batch_ratio, 3), "pr_auc": round(m["pr_auc"], 4),
            "recall_at_p0.5": round(m["recall_at_p0.5"], 4), "event_recall": round(m["event_recall"], 4),
            "false_alarms_per_series": round(m["false_alarms_per_series"], 3), "seconds": round(res.seconds, 2)}


def read_csv_rows(path: str | Path) -> list[dict]:
    """CSV rows with numbers parsed where they parse (empty stays '')."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                try:
                    rec[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                except ValueError:
                    rec[k] = v
            out.append(rec)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.spikes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="compute the spike map (one CSV row per cell × seed)")
    sw.add_argument("--out", required=True)
    sw.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per cell")
    sw.add_argument("--first-seed", type=int, default=0)
    sw.add_argument("--learning-rates", default="0.001,0.01,0.03,0.1")
    sw.add_argument("--positive-weights", default="30,neg/pos")
    sw.add_argument("--append", action="store_true", help="skip cells × seeds already in --out")
    rm = sub.add_parser("remedies", help="every remedy on each seed at one learning rate (w = neg/pos)")
    rm.add_argument("--out", required=True)
    rm.add_argument("--seeds", type=int, default=10)
    rm.add_argument("--first-seed", type=int, default=0)
    rm.add_argument("--learning-rate", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.command == "remedies":
        return _remedies_main(args)
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    out = Path(args.out)
    done = set()
    if args.append and out.exists():
        done = {(r["learning_rate"], r["positive_weight"], r["seed"]) for r in read_spike_map(out)}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            csv.writer(fh).writerow(SWEEP_COLUMNS)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    lrs = [float(v) for v in args.learning_rates.split(",")]
    for seed in seeds:  # seeds outermost: a partial map still has every cell
        for lr in lrs:
            for w in _parse_weights(args.positive_weights):
                if (lr, str(w), seed) in done:
                    continue
                row = spike_map_cell(lr, w, [seed])[0]
                with open(out, "a", newline="") as fh:
                    csv.DictWriter(fh, SWEEP_COLUMNS).writerow(row)
                print(f"lr={lr:g} w={w} seed={seed}: spiked={row['spiked']} "
                      f"ratio={row['max_monitored_ratio']:.2f} pr_auc={row['pr_auc']:.3f} "
                      f"({row['seconds']:.1f}s)", flush=True)
    return 0


def _remedies_main(args) -> int:
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerow(REMEDY_COLUMNS)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        results, info = remedy_runs(seed, args.learning_rate)
        with open(out, "a", newline="") as fh:
            writer = csv.DictWriter(fh, REMEDY_COLUMNS)
            for res in results:
                writer.writerow(remedy_row(res))
        print(f"seed {seed}: " + ", ".join(f"{r.remedy}={int(r.spiked)}/{r.metrics['pr_auc']:.3f}" for r in results)
              + f"  clips={[round(c, 3) for c in info['clip_thresholds']]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- pictures and widget functions


def plot_example_series(data: imb.Series, n: int = 3, zoom: int = 12):
    """Anomalous series (top row, full length) and a ±zoom window around each anomaly
    (bottom row), labelled steps marked. Returns the figure."""
    from .workbook.plotting import figure
    idx = np.flatnonzero(data.has_anomaly)[:n]
    fig, axes = figure(len(idx), 2, finding="The anomaly is a 3-step zigzag: visible in its window, "
                                            "not by its height")
    axes = np.atleast_2d(axes)
    for k, i in enumerate(idx):
        x, y, s = data.x[i, :, 0], data.y[i], int(data.onsets[i])
        for row, (lo, hi) in enumerate([(0, data.timesteps), (max(0, s - zoom), min(data.timesteps, s + zoom))]):
            ax = axes[row, k]
            t = np.arange(lo, hi)
            ax.plot(t, x[lo:hi], lw=1)
            ax.scatter(t[y[lo:hi] > 0], x[lo:hi][y[lo:hi] > 0], color="red", zorder=3, label="labelled anomaly")
            ax.set_xlabel("timestep")
            ax.set_ylabel("value (a.u.)")
            ax.set_title(f"series {i}" + (" (zoom)" if row else ""), fontsize=9)
    axes[0, 0].legend(loc="lower left")
    return fig


def plot_batch_vs_monitored(res: RunResult, finding: str):
    """Per-batch training loss (coloured by labelled steps in the batch) and the
    monitored loss on the fixed set, log scale. Returns the figure."""
    from .workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=9, height=3.8)
    steps = np.arange(1, len(res.batch_loss) + 1)
    sc = ax.scatter(steps, res.batch_loss, c=res.batch_positives, s=9, cmap="viridis", label="per-batch loss")
    ax.plot(res.monitor_steps, res.monitor_loss, color="black", lw=1.4, label="monitored loss (fixed set)")
    flagged = res.monitor_steps[res.spikes]
    ax.scatter(flagged, res.monitor_loss[res.spikes], marker="x", color="red", s=60, zorder=4,
               label="flagged monitored spike")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted BCE, mean(w·l)")
    fig.colorbar(sc, ax=ax, label="labelled steps in the batch")
    ax.legend(loc="upper right")
    return fig


def plot_spike_map(summary: list[dict], finding: str):
    """Fraction of seeds with a monitored spike vs learning rate, one line per
    positive weight, with 95% Wilson intervals. Returns the figure."""
    from .workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=7.5, height=4)
    weights = sorted({r["positive_weight"] for r in summary}, key=_weight_key)
    for j, w in enumerate(weights):
        rs = [r for r in summary if r["positive_weight"] == w]
        lr = np.array([r["learning_rate"] for r in rs]) * (1 + 0.06 * (j - (len(weights) - 1) / 2))
        f = np.array([r["fraction"] for r in rs])
        err = np.array([[r["fraction"] - r["ci_low"] for r in rs], [r["ci_high"] - r["fraction"] for r in rs]])
        ax.errorbar(lr, f, yerr=err, marker="o", capsize=4, label=f"positive weight {w}")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Adam learning rate")
    ax.set_ylabel("fraction of seeds with a monitored spike")
    ax.legend(loc="upper left")
    return fig


def plot_run(res: RunResult, title: str | None = None):
    """One recorded run: per-batch and monitored loss with spike flags (widget view)."""
    label = title or (f"{res.remedy}, seed {res.seed}: {int(res.spikes.sum())} flagged spikes, "
                      f"max monitored ratio {res.max_monitored_ratio:.1f}×, PR-AUC {res.metrics['pr_auc']:.3f}")
    fig = plot_batch_vs_monitored(res, label)
    return fig


def mechanism_table(positive_weight: float, p_anomaly: float, p_normal: float = 0.01,
                    steps_in_batch: int = 32 * 128):
    """The analytic mechanism as a Table (what the widget shows)."""
    from .workbook.tables import Table
    m = imb.anomaly_loss_vs_normals(positive_weight, p_anomaly, p_normal, steps_in_batch)
    return Table(["quantity", "value"], [
        ["loss of the missed anomalous step, w·(−log p)", m["loss_of_miss"]],
        [f"loss of one normal step at p = {p_normal:g}", m["loss_of_normal_step"]],
        ["normal steps one miss outweighs (loss)", m["normals_outweighed_loss"]],
        ["normal steps one miss outweighs (logit gradient)", m["normals_outweighed_grad"]],
        [f"batch mean loss, {steps_in_batch:,} normal steps", m["batch_mean_loss_all_normal"]],
        ["batch mean loss with this one miss", m["batch_mean_loss_with_miss"]],
        ["jump factor of the batch loss", m["batch_ratio"]],
    ], title=f"w = {positive_weight:g}, anomalous step predicted at p = {p_anomaly:g}")


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


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure, which is then closed (widgets show cached images)."""
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
