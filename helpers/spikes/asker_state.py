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
    Run                                            one run: model, Adam, data, the step, the log, snapshots
    spike_mask(loss)                               the lesson's spike rule (loss ≥ 10 × median of the previous 50)
    event_recall_at_false_alarms(...)              event recall at 1 false alarm per 1,000 steps

Regeneration: `python -m helpers.spikes.asker_state` writes data/spike_runs/ (runs a and b from the first step,
branches from their snapshots); `--from-scratch` then trains every remedy from the first step of variant b into
data/spike_runs/from_scratch/.

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


def spike_on_arrival(loss: float, previous) -> bool:
    """The spike rule for a new batch loss, given the losses before it (what skip-step decides on)."""
    previous = np.asarray(previous[-SPIKE_RULE["window"]:], np.float64)
    if len(previous) < 3:
        return False
    ref = np.median(previous)
    return loss >= SPIKE_RULE["ratio"] * ref and loss - ref >= SPIKE_RULE["min_jump"]


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
    threshold = np.quantile(s[~imb._widen(y, tolerance)], 1 - per_1000_steps / 1000)
    return imb.event_recall(y, s, threshold=threshold, tolerance=tolerance)


LOG = ("loss", "positives", "min_p_positive", "grad_norm", "clipped", "skipped", "sqrt_vhat_mean",
       "max_update_over_lr", "max_series_loss", "max_series")
EVAL_LOG = ("eval_step", "val_pr_auc", "monitor_loss")


class Run:
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
        self._is_spike = is_spike or spike_on_arrival
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
        pr = imb.pr_auc(val.y, self.predict(val.x))
        z = np.concatenate([self._predict(tf.constant(mon.x[k:k + 128])).numpy() for k in range(0, len(mon.x), 128)])
        mloss = float(tf.reduce_mean(weighted_loss_from_logits(mon.y, z, self.data.positive_weight)))
        for k, v in zip(EVAL_LOG, (self.step, pr, mloss)):
            self.log[k].append(v)
        return {"val_pr_auc": pr, "monitor_loss": mloss}

    def final_metrics(self) -> dict:
        p = self.predict(self.data.val.x)
        return {"final_pr_auc": imb.pr_auc(self.data.val.y, p),
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


# ---------------------------------------------------------------- regeneration: data/spike_runs/

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


def reached_step(loss, target: float | None = None, window: int = 50):
    """First step k ≥ window where the median of the previous `window` batch losses is ≤ target
    (default TARGET_LOSS); None if never."""
    loss, target = np.asarray(loss), TARGET_LOSS if target is None else target
    for k in range(window, len(loss) + 1):
        if np.median(loss[k - window:k]) <= target:
            return k
    return None


def _save(out, name, run: Run, **meta):
    import json
    import time
    arrays = run.arrays()
    arrays["meta"] = np.array(json.dumps({"name": name, "seed": run.seed, "variant": run.data.variant,
                                          "remedy": run.remedy, "positive_weight": run.w,
                                          "clip": None if not np.isfinite(run.clip) else run.clip,
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                          **run.final_metrics(), **meta}))
    tmp = out / f".{name}.partial.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out / f"{name}.npz")


def job(spec: dict) -> str:
    """One job of the regeneration: kind "a" or "b" (from the first step), or "branch"
    (from a snapshot: variant c/d from a's, or a remedy from b's). Writes <name>.npz."""
    import os
    import time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out, seed, kind = Path(spec["out"]), spec["seed"], spec["kind"]
    snaps = out / "snapshots"
    (out if kind == "scratch" else snaps).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if kind == "a":
        run, reached = Run(variant_data("a", seed), seed=seed), None
        while run.step < MAX_STEPS_A and (reached is None or run.step < reached + HOLD_STEPS):
            run.train(50)
            if reached is None and (reached := reached_step(run.log["loss"])) is not None:
                np.savez_compressed(snaps / f"a_s{seed}.npz", **run.state())
        name, meta = f"a_s{seed}", {"reached": reached}
    elif kind == "b":
        run = Run(variant_data("b", seed), seed=seed)
        run.train(SNAPSHOT_B)
        np.savez_compressed(snaps / f"b_s{seed}.npz", **run.state())
        run.train(STEPS_B - SNAPSHOT_B)
        name, meta = f"b_s{seed}", {"reached": reached_step(run.log["loss"])}
    elif kind == "scratch":
        # variant b from the first step with one remedy; clip at the 95th percentile of the gradient norms of
        # the same seed's unremedied run of the same size over the same steps (at 16 units: the committed b run)
        clip = None
        if spec["remedy"] == "clip":
            clip = float(np.percentile(np.load(spec["clip_from"])["grad_norm"][:SCRATCH_STEPS], 95))
        units = spec.get("units", SCRATCH_UNITS)
        run = Run(variant_data("b", seed), seed=seed, remedy=spec["remedy"], clip=clip, units=units)
        run.train(SCRATCH_STEPS)
        run.evaluate()                       # the validation PR-AUC after the last step, at eval_step SCRATCH_STEPS
        name, meta = f"scratch_b_{spec['remedy']}_s{seed}", {"from_step": 0, "units": units}
    else:
        src = spec["source"]
        state = dict(np.load(snaps / f"{src}_s{seed}.npz"))
        clip = None
        if spec["remedy"] == "clip":
            g = np.load(out / f"{src}_s{seed}.npz")["grad_norm"]
            clip = float(np.percentile(g[1000:SNAPSHOT_B], 95))
        run = Run(variant_data(spec["variant"], seed), seed=seed, remedy=spec["remedy"], clip=clip)
        run.load_state(state)
        start = run.step
        run.train(BRANCH_STEPS)
        name = f"{src}_to_{spec['variant']}_{spec['remedy']}_s{seed}"
        meta = {"source": src, "from_step": start}
    _save(out, name, run, seconds_per_step=(time.time() - t0) / max(1, len(run.log["loss"])), **meta)
    return name


def jobs(seeds, out) -> tuple[list, list]:
    """The two phases: runs from the first step, then branches from their snapshots."""
    first = [dict(kind=k, seed=s, out=str(out)) for s in seeds for k in ("a", "b")]
    branches = [dict(kind="branch", source="a", variant=v, remedy="none", seed=s, out=str(out))
                 for s in seeds for v in ("a", "c", "d")]
    branches += [dict(kind="branch", source="b", variant="b", remedy=r, seed=s, out=str(out))
                 for s in seeds for r in REMEDIES]
    return first, branches


def scratch_dir(runs, units: int = SCRATCH_UNITS) -> Path:
    """Where the runs from the first step go: <runs>/from_scratch/ at the page's size,
    <runs>/from_scratch_lstm<units>/ at another."""
    return Path(runs) / (SCRATCH_DIR if units == SCRATCH_UNITS else f"{SCRATCH_DIR}_lstm{units}")


def scratch_jobs(seeds, runs, units: int = SCRATCH_UNITS, remedies=None) -> list:
    """The phases of the runs from the first step of variant b, one remedy each, the cheaper windowed runs last.
    At the page's size the clip is set from the committed b run (the same run as no remedy), so there is one phase;
    at another size it is set from that size's own no-remedy run, so clip waits for a second phase."""
    out = scratch_dir(runs, units)
    order = sorted(remedies or REMEDIES, key=lambda r: r.startswith("windows"))
    ref = (lambda s: Path(runs) / f"b_s{s}.npz") if units == SCRATCH_UNITS else (lambda s: out / f"scratch_b_none_s{s}.npz")
    spec = lambda r, s: dict(kind="scratch", remedy=r, seed=s, units=units, runs=str(runs), out=str(out),
                             clip_from=str(ref(s)))
    if units == SCRATCH_UNITS:
        return [[spec(r, s) for r in order for s in seeds]]
    return [[spec(r, s) for r in order if r != "clip" for s in seeds],
            [spec("clip", s) for s in seeds if "clip" in order]]


def parse_args(argv=None):
    """The command line of the regeneration, checked: --seeds (1–10 distinct seeds ≥ 0), --workers (1–8), --out."""
    import argparse
    from ..workbook.committed import parse_seeds
    ap = argparse.ArgumentParser(prog="python -m helpers.spikes.asker_state",
                                 description="Regenerate lesson 07's per-step logs and snapshots (data/spike_runs/).")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    ap.add_argument("--out", default=None, help="folder to write (default: the workbook's data/spike_runs/)")
    ap.add_argument("--workers", type=int, default=2, help="processes at a time, 1-8 (default 2)")
    ap.add_argument("--from-scratch", action="store_true",
                    help=f"instead: every remedy from the first step of variant b, {SCRATCH_STEPS} steps, into "
                         f"<out>/{SCRATCH_DIR}/ (needs the b runs of the same seeds in <out>)")
    ap.add_argument("--units", type=int, default=SCRATCH_UNITS,
                    help=f"with --from-scratch: LSTM units (default {SCRATCH_UNITS}, the page's size; another size "
                         f"writes <out>/{SCRATCH_DIR}_lstm<units>/ and sets its clip from its own no-remedy run)")
    ap.add_argument("--remedies", default=None,
                    help="with --from-scratch: comma-separated remedies (default all; clip at another size needs none)")
    a = ap.parse_args(argv)
    if not 4 <= a.units <= 256:
        ap.error(f"--units {a.units}: expected 4-256")
    if (a.units != SCRATCH_UNITS or a.remedies) and not a.from_scratch:
        ap.error("--units and --remedies go with --from-scratch")
    if a.remedies is not None:
        a.remedies = [r.strip() for r in a.remedies.split(",") if r.strip()]
        unknown = sorted(set(a.remedies) - set(REMEDIES))
        if unknown or not a.remedies:
            ap.error(f"--remedies: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(REMEDIES)}")
        if a.units != SCRATCH_UNITS and "clip" in a.remedies and "none" not in a.remedies:
            ap.error(f"--remedies: clip at {a.units} units is set from that size's no-remedy run; add none")
    try:
        a.seeds = parse_seeds(a.seeds)
    except ValueError as e:
        ap.error(str(e))
    if not 1 <= a.workers <= 8:
        ap.error(f"--workers {a.workers}: expected 1-8")
    a.out = Path(a.out) if a.out else find_runs_dir()
    return a


def main(argv=None) -> int:
    """python -m helpers.spikes.asker_state [--seeds 0,1,2,3,4] [--out data/spike_runs] [--workers 2]"""
    import multiprocessing as mp
    import sys
    import time
    a = parse_args(argv)
    seeds, out = a.seeds, a.out
    out.mkdir(parents=True, exist_ok=True)
    if a.from_scratch:
        missing = [f"b_s{s}.npz" for s in seeds if not (out / f"b_s{s}.npz").exists()]
        if missing and a.units == SCRATCH_UNITS:
            print(f"error: --from-scratch needs the b runs in {out}, missing {', '.join(missing)}: "
                  f"run python -m helpers.spikes.asker_state first", file=sys.stderr)
            return 2
        phases, target = scratch_jobs(seeds, out, a.units, a.remedies), scratch_dir(out, a.units)
        target.mkdir(exist_ok=True)
    else:
        phases, target = list(jobs(seeds, out)), out
    from ..workbook.committed import utc_now
    t0, started = time.time(), utc_now()
    with mp.get_context("spawn").Pool(a.workers, maxtasksperchild=1) as pool:
        for phase in phases:
            for name in pool.imap_unordered(job, phase):
                print(f"{time.time() - t0:7.0f} s  {name}", flush=True)
    write_runs_provenance(target, seeds, started, utc_now(), a.workers, from_scratch=a.from_scratch,
                          units=a.units, remedies=a.remedies)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def write_runs_provenance(out, seeds, started, finished, workers: int = 2, from_scratch: bool = False,
                          units: int = SCRATCH_UNITS, remedies=None):
    """out/provenance.json: the command, versions, machine and dates of the regeneration."""
    import json
    from ..workbook.committed import provenance
    command = "python -m helpers.spikes.asker_state --seeds " + ",".join(map(str, seeds))
    command += " --from-scratch" if from_scratch else ""
    command += f" --units {units}" if units != SCRATCH_UNITS else ""
    command += " --remedies " + ",".join(remedies) if remedies else ""
    files = sorted(p.name for p in Path(out).glob("*.npz"))
    info = provenance(command, started=started, finished=finished, rows=len(files), workers=workers, runs=files,
                      data=DATA, variants=VARIANTS, remedies=REMEDIES, spike_rule=SPIKE_RULE,
                      target_loss=TARGET_LOSS, hold_steps=HOLD_STEPS, steps_b=STEPS_B, snapshot_b=SNAPSHOT_B,
                      branch_steps=BRANCH_STEPS, scratch_steps=SCRATCH_STEPS, units=units)
    (Path(out) / "provenance.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
