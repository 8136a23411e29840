"""Long runs in the asker's state, with a log of every step (lesson 07).

The model is 2×LSTM(16) + Dense(1) giving logits, trained with Adam 1e-3 on
batches of 128 series of 256 steps whose positive share is about 0.04 %, with
w = neg/pos on the positives. Every step logs the batch loss (before its
update), the number of positives, the lowest p on a positive, the gradient norm
(before clipping), the mean of Adam's √v̂, the largest update over lr, and the
series carrying the largest per-series loss. Validation PR-AUC (clean labels)
and the weighted loss on fixed monitoring series are logged every 100 steps.

    DATA, VARIANTS, variant_data(variant, seed)   the data variants a–d and their batch streams
    tagger(units)                                  the model (logits out)
    weighted_loss_from_logits, focal_loss_from_logits    element losses (B, T) from logits (the first is
                                                         lesson 07's own, generated into helpers/lessons/l07.py)
    SpikeRun                                       one run: model, Adam, data, the step, the log, snapshots
    spike_mask(loss)                               the lesson's spike rule (loss ≥ 10 × median of the previous 50)
    event_recall_at_false_alarms(...)              event recall at 1 false alarm per 1,000 steps

Regeneration: `python -m helpers.spikes.asker_state` writes data/spike_runs/ (runs a and b from the first step,
branches from their snapshots); `--from-scratch` then trains every remedy from the first step of variant b into
data/spike_runs/from_scratch/, and `--units 64` the check at the asker's size. The command is here; its jobs,
checks and provenance are in helpers/spikes/regeneration.py. Where the runs live and how long they are (find_runs_dir,
scratch_dir, SCRATCH_STEPS, BRANCH_STEPS) stay here, since the page reads them.

The page writes the loss, the step, the spike rule, skip-step and clipping;
these are the same code for the regeneration command, and the page checks
that its versions give the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .. import imbalanced as imb
from .. import detection_metrics
from ..lessons.l07 import is_spike as lesson_is_spike  # the page's spike rule (lesson 07 section 2), skip-step's
from ..lessons.l07 import weighted_loss_from_logits  # noqa: F401  (written on the page, lesson 07 section 2)
from .flags import flag_spikes, running_median  # noqa: F401  (running_median: the lesson's figures)

DATA = dict(n_series=1400, timesteps=256, frac_series_with_anomaly=0.06, anomalies_per_series=2,
            batch=128, jitter=0.1, unlearnable=0.03, stretch=44, stretch_every=300, n_validation=400,
            n_monitor=256, window=64)
VARIANTS = {
    "a": "clean labels, shuffled every epoch",
    "b": "label jitter: 10 % of the labelled anomalies 1–2 steps off their signal",
    "c": "3 % of the series carry their labels on random steps with no signal (unlearnable)",
    "d": "clean labels, and every 300 steps a stretch of 44 batches without a positive",
}
SPIKE_RULE = dict(window=50, ratio=10.0, min_jump=0.02)
EVAL_EVERY = 100


def spike_mask(loss) -> np.ndarray:
    """True where a batch loss is ≥ 10 × the median of the previous 50 batch losses (and ≥ 0.02 above it)."""
    return flag_spikes(np.asarray(loss, np.float64), **SPIKE_RULE)


# ---------------------------------------------------------------- data

@dataclass
class RunData:
    """One run's training data: x (N, T, 1), y (N, T); moved (N,) marks series whose labels
    are off their signal (jittered or unlearnable); the validation and monitoring series."""
    x: np.ndarray
    y: np.ndarray
    moved: np.ndarray
    variant: str
    seed: int
    val: imb.Series
    monitor: imb.Series

    @property
    def positive_weight(self) -> float:
        return imb.positive_weight_for(self.y)


def variant_data(variant: str, seed: int, **sizes) -> RunData:
    """Training data of variant a–d for one seed, validation series with clean labels (seed
    10,000 + seed) and monitoring series drawn like the training data (seed 20,000 + seed)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    d = {**DATA, **sizes}
    kw = dict(frac_series_with_anomaly=d["frac_series_with_anomaly"], anomalies_per_series=d["anomalies_per_series"])
    s = imb.make_series(d["n_series"], d["timesteps"], label_jitter=d["jitter"] if variant == "b" else 0.0,
                        seed=seed, **kw)
    y = s.y.copy()
    moved = np.any(s.y != s.true_y, axis=1)
    if variant == "c":
        rng = np.random.default_rng(seed + 99)
        chosen = rng.choice(len(y), int(round(d["unlearnable"] * len(y))), replace=False)
        T, k = y.shape[1], d["anomalies_per_series"]
        for i in chosen:
            y[i] = 0
            start = int(rng.integers(0, T - k))
            while s.has_anomaly[i] and abs(start - s.onsets[i]) < 8:
                start = int(rng.integers(0, T - k))
            y[i, start:start + k] = 1
        moved = np.zeros(len(y), bool)
        moved[chosen] = True
    val = imb.make_series(d["n_validation"], d["timesteps"], seed=10_000 + seed, **kw)
    monitor = imb.make_series(d["n_monitor"], d["timesteps"], seed=20_000 + seed, **kw)
    return RunData(s.x, y, moved, variant, seed, val, monitor)


def batch_stream(data: RunData, rng: np.random.Generator, *, batch: int = DATA["batch"]):
    """Series indices of each batch, forever: a new permutation every epoch; for variant d,
    every `stretch_every` steps a stretch of `stretch` batches drawn from positive-free series."""
    if not 1 <= batch <= len(data.x):
        raise ValueError(f"batch {batch} must be between 1 and the {len(data.x)} training series")
    quiet = np.flatnonzero(data.y.max(axis=1) == 0)
    step = 0
    while True:
        order = rng.permutation(len(data.x))
        for k in range(len(order) // batch):
            if data.variant == "d" and step > 0 and step % DATA["stretch_every"] == 0:
                for _ in range(DATA["stretch"]):
                    yield rng.choice(quiet, batch, replace=False)
                    step += 1
            yield order[k * batch:(k + 1) * batch]
            step += 1


def windows(x, y, rng, length: int, *, centred: bool):
    """Windows of `length` steps, one per series: random offsets, or (centred) around the first
    labelled step of series that have one (± a quarter window), random elsewhere."""
    T = x.shape[1]
    starts = rng.integers(0, T - length + 1, len(x))
    if centred:
        for k in range(len(x)):
            where = np.flatnonzero(y[k])
            if len(where):
                starts[k] = np.clip(where[0] - length // 2 + rng.integers(-length // 4, length // 4 + 1), 0, T - length)
    cols = starts[:, None] + np.arange(length)[None, :]
    rows = np.arange(len(x))[:, None]
    return x[rows, cols], y[rows, cols]


def window_positive_weight(data: RunData, length: int, *, centred: bool, seed: int = 0) -> float:
    """neg/pos over one window per training series (the w a windowed run should use)."""
    _, yw = windows(data.x, data.y, np.random.default_rng(seed), length, centred=centred)
    return imb.positive_weight_for(yw)


# ---------------------------------------------------------------- model and losses

def tagger(units: int = 16, seed: int = 0) -> keras.Model:
    """2×LSTM(units) + Dense(1): one logit per step, any length."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, 1))
    h = keras.layers.LSTM(units, return_sequences=True)(inp)
    h = keras.layers.LSTM(units, return_sequences=True)(h)
    z = keras.layers.Dense(1)(h)
    return keras.Model(inp, z)


def focal_loss_from_logits(y, z, alpha=0.25, gamma=2.0):
    """Lin et al.'s focal loss from logits: α on positives, 1 − α on negatives, no class weight."""
    p = tf.sigmoid(z)
    return (alpha * y * (1 - p) ** gamma * tf.nn.softplus(-z)
            + (1 - alpha) * (1 - y) * p ** gamma * tf.nn.softplus(z))


REMEDIES = {
    "none": "Adam 1e-3, w = neg/pos",
    "clip": "global_clipnorm at the 95th percentile of the run's own gradient norms",
    "skip_step": "skip the update of a batch whose loss is ≥ 10 × the median of the previous 50",
    "cap": "element loss capped at w·ln 100 (positives below p = 0.01 stop pulling)",
    "beta2_0.99": "Adam with β₂ = 0.99",
    "lr_3e-4": "learning rate 3e-4",
    "focal": "focal loss, α = 0.25, γ = 2, no class weight",
    "windows_random": "64-step windows at random offsets, w recomputed for the windows",
    "windows_centred": "64-step windows around the anomalies, w recomputed for the windows",
}


# ---------------------------------------------------------------- one run

def event_recall_at_false_alarms(y_true, p, *, per_1000_steps: float = 1.0, tolerance: int = 2) -> float:
    """Event recall with the threshold set so that the model fires on `per_1000_steps` of every
    1,000 steps farther than `tolerance` from any labelled step."""
    y, s = np.asarray(y_true) > 0.5, np.asarray(p, np.float64)
    threshold = np.quantile(s[~detection_metrics.widen_events(y, tolerance)], 1 - per_1000_steps / 1000)
    return detection_metrics.event_recall(y, s, threshold=threshold, tolerance=tolerance)


LOG = ("loss", "positives", "min_p_positive", "grad_norm", "clipped", "skipped", "sqrt_vhat_mean",
       "max_update_over_lr", "max_series_loss", "max_series")
EVAL_LOG = ("eval_step", "val_pr_auc", "monitor_loss")


class SpikeRun:
    """One training run in the asker's regime. `remedy` is a key of REMEDIES; `clip` is the
    clip norm the "clip" remedy uses. The step is `compute` (loss, gradients and statistics
    of a batch) then `apply` (Adam), so skip-step can refuse an update after seeing the loss.
    The lesson passes its own code: `element_loss(y, z, w, cap)` replaces weighted_loss_from_logits
    (focal keeps focal_loss_from_logits) and `is_spike(loss, previous)` the skip rule."""

    def __init__(self, data: RunData, *, seed: int, remedy: str = "none", clip: float | None = None,
                 lr: float = 1e-3, units: int = 16, element_loss=None, is_spike=None, batch: int = DATA["batch"]):
        if remedy not in REMEDIES:
            raise ValueError(f"remedy must be one of {sorted(REMEDIES)}, got {remedy!r}")
        if remedy == "clip" and not clip:
            raise ValueError("the clip remedy needs clip=, the run's own gradient-norm percentile")
        self.data, self.seed, self.remedy = data, seed, remedy
        self._weighted = element_loss or weighted_loss_from_logits
        self._is_spike = is_spike or lesson_is_spike
        self.model = tagger(units, seed)
        kw = {"learning_rate": 3e-4 if remedy == "lr_3e-4" else lr}
        if remedy == "beta2_0.99":
            kw["beta_2"] = 0.99
        if remedy == "clip":
            kw["global_clipnorm"] = float(clip)
        self.opt = keras.optimizers.Adam(**kw)
        self.opt.build(self.model.trainable_variables)
        self.clip = float(clip) if remedy == "clip" else np.inf
        self.window = DATA["window"] if remedy.startswith("windows") else None
        centred = remedy == "windows_centred"
        self.w = (window_positive_weight(data, self.window, centred=centred, seed=seed) if self.window
                  else data.positive_weight)
        self.cap = self.w * np.log(100.0) if remedy == "cap" else np.inf
        self.rng = np.random.default_rng(1000 + seed)
        self.window_rng = np.random.default_rng(2000 + seed)
        self.stream = batch_stream(data, self.rng, batch=batch)
        self.step = 0
        self.log = {k: [] for k in LOG + EVAL_LOG}
        self._compute = tf.function(self._compute_fn)
        self._apply = tf.function(self._apply_fn)
        self._predict = tf.function(lambda x: self.model(x, training=False)[..., 0])

    def element_loss(self, y, z):
        if self.remedy == "focal":
            return focal_loss_from_logits(y, z)
        return self._weighted(y, z, self.w, self.cap)

    def _compute_fn(self, x, y):
        with tf.GradientTape() as tape:
            z = self.model(x, training=True)[..., 0]
            element = self.element_loss(y, z)
            loss = tf.reduce_mean(element)
        grads = tape.gradient(loss, self.model.trainable_variables)
        p = tf.sigmoid(z)
        per_series = tf.reduce_mean(element, axis=1)
        return (loss, grads, tf.linalg.global_norm(grads),
                tf.reduce_min(tf.where(y > 0, p, tf.ones_like(p))), per_series)

    def _apply_fn(self, grads):
        before = [tf.identity(v) for v in self.model.trainable_variables]
        self.opt.apply_gradients(zip(grads, self.model.trainable_variables))
        step = tf.cast(self.opt.iterations, tf.float32)
        vhat = [tf.sqrt(v / (1 - self.opt.beta_2 ** step)) for v in self.opt._velocities]
        n = tf.add_n([tf.cast(tf.size(v), tf.float32) for v in vhat])
        mean_vhat = tf.add_n([tf.reduce_sum(v) for v in vhat]) / n
        moved = tf.reduce_max([tf.reduce_max(tf.abs(a - b)) for a, b in zip(self.model.trainable_variables, before)])
        return mean_vhat, moved / self.opt.learning_rate

    def train(self, steps: int, *, progress=None) -> None:
        """`steps` more steps, appending to the log; evaluation every EVAL_EVERY steps."""
        for _ in range(steps):
            if self.step % EVAL_EVERY == 0:
                self.evaluate()
            idx = next(self.stream)
            x, y = self.data.x[idx], self.data.y[idx]
            if self.window:
                x, y = windows(x, y, self.window_rng, self.window, centred=self.remedy == "windows_centred")
            loss, grads, gnorm, min_p, per_series = self._compute(tf.constant(x), tf.constant(y))
            loss = float(loss)
            skip = self.remedy == "skip_step" and bool(self._is_spike(loss, self.log["loss"]))
            vhat, upd = (np.nan, 0.0) if skip else (float(t) for t in self._apply(grads))
            per_series = per_series.numpy()
            row = dict(loss=loss, positives=float(y.sum()), min_p_positive=float(min_p), grad_norm=float(gnorm),
                       clipped=float(float(gnorm) > self.clip), skipped=float(skip), sqrt_vhat_mean=vhat,
                       max_update_over_lr=upd, max_series_loss=float(per_series.max()),
                       max_series=float(idx[int(per_series.argmax())]))
            for k, v in row.items():
                self.log[k].append(v)
            self.step += 1
            if progress is not None:
                progress.update(1)

    def predict(self, x, batch: int = 200) -> np.ndarray:
        return np.concatenate([tf.sigmoid(self._predict(tf.constant(x[k:k + batch]))).numpy()
                               for k in range(0, len(x), batch)])

    def evaluate(self) -> dict:
        """Validation PR-AUC (clean labels) and the weighted loss on the monitoring series."""
        val, mon = self.data.val, self.data.monitor
        pr = detection_metrics.pr_auc(val.y, self.predict(val.x))
        z = np.concatenate([self._predict(tf.constant(mon.x[k:k + 128])).numpy() for k in range(0, len(mon.x), 128)])
        mloss = float(tf.reduce_mean(weighted_loss_from_logits(mon.y, z, self.data.positive_weight)))
        for k, v in zip(EVAL_LOG, (self.step, pr, mloss)):
            self.log[k].append(v)
        return {"val_pr_auc": pr, "monitor_loss": mloss}

    def final_metrics(self) -> dict:
        p = self.predict(self.data.val.x)
        return {"final_pr_auc": detection_metrics.pr_auc(self.data.val.y, p),
                              "event_recall_1fa": event_recall_at_false_alarms(self.data.val.y, p)}

    # snapshots: weights, Adam's moments and step, the batch stream's RNG
    def state(self) -> dict:
        out = {f"w{k}": v for k, v in enumerate(self.model.get_weights())}
        out.update({f"o{k}": np.asarray(v.numpy()) for k, v in enumerate(self.opt.variables)
                    if "learning_rate" not in v.path})
        out["step"] = np.int64(self.step)
        return out

    def load_state(self, state: dict) -> None:
        n = sum(1 for k in state if k.startswith("w"))
        self.model.set_weights([state[f"w{k}"] for k in range(n)])
        for k, v in enumerate(self.opt.variables):
            if f"o{k}" in state:
                v.assign(state[f"o{k}"])
        self.step = int(state["step"])
        import os
        from ..workbook.arithmetic import NUDGE_ENV, _nudged
        if os.environ.get(NUDGE_ENV):   # another machine's arithmetic: one ulp on one loaded weight
            _nudged(self.model.trainable_variables[0])

    def arrays(self) -> dict:
        return {k: np.asarray(v, np.float32 if k != "max_series" else np.int32) for k, v in self.log.items()}


# ---------------------------------------------------------------- the committed runs: data/spike_runs/

OUT_DIR = "spike_runs"
TARGET_LOSS = 0.005          # the asker's ordinary batch loss
HOLD_STEPS = 3000            # steps kept in the state after reaching it
MAX_STEPS_A = 7000
STEPS_B, SNAPSHOT_B = 4000, 3000
BRANCH_STEPS = 500
SCRATCH_DIR = "from_scratch"   # data/spike_runs/from_scratch/: every remedy trained from the first step
SCRATCH_STEPS = 2000
SCRATCH_UNITS = 16             # the page's LSTM size; --units 64 checks it against the asker's


def find_runs_dir():
    """data/spike_runs/ of the workbook (see helpers.workbook.committed.find_data_dir)."""
    from ..workbook.committed import find_data_dir
    return find_data_dir() / OUT_DIR


def scratch_dir(runs, units: int = SCRATCH_UNITS) -> Path:
    """Where the runs from the first step go: <runs>/from_scratch/ at the page's size,
    <runs>/from_scratch_lstm<units>/ at another."""
    return Path(runs) / (SCRATCH_DIR if units == SCRATCH_UNITS else f"{SCRATCH_DIR}_lstm{units}")


def main(argv=None) -> int:
    """`python -m helpers.spikes.asker_state [...]`: the regeneration, in helpers/spikes/regeneration.py."""
    from .regeneration import main as regenerate
    return regenerate(argv)


if __name__ == "__main__":
    raise SystemExit(main())
