"""A fitted model meets a long stretch of batches without labelled positives (lesson 06, sections 7–8).

    CHECKPOINT_DIR, checkpoint_path(seed)  the fitted asker-regime models, committed (weights + Adam state)
    save_checkpoint / load_checkpoint      one .npz per seed: model weights, every Adam variable, metadata
    make_checkpoint(seed, steps)           asker_run(seed, steps) (the committed row's first steps), saved
    quiet_batches(series, n, ...)          batches drawn from the series without a labelled positive
    normal_batches(series, n, ...)         ordinary shuffled batches
    STRETCH_DEFAULTS, STRETCH_REMEDIES     the scenario's sizes; each remedy's settings
    stretch_run(seed, remedy, ...)         from the checkpoint: `quiet` positive-free batches, then `normal`
                                           ordinary ones, validation PR-AUC along the way → one row
    STRETCH_COLUMNS, stretch_row(run)      data/remedies.csv
    SCRATCH_DEFAULTS, scratch_run(seed, remedy), SCRATCH_COLUMNS, scratch_row(run)
                                           a remedy's cost from the first step: the asker's regime
                                           (asker_run) trained with it from initialisation → data/from_scratch.csv

The weighted BCE of the first ordinary batch after the stretch (Keras's mean reduction, w = neg/pos,
computed by a forward pass before that batch's update) is the spike measured on one scale for every
remedy, whatever loss the remedy trains with. Recovery is the number of ordinary steps until the
validation PR-AUC is back at ASKER_DEFAULTS["fit_target"] (0 if it never fell below it; empty — NaN —
if it was still below after the `normal` ordinary steps).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import imbalanced as imb
from .asker import ASKER_DEFAULTS, asker_row, asker_run, asker_split
from .committed import ASKER_COLUMNS, DATA_DIR
from .training import trainer_for

CHECKPOINT_DIR = DATA_DIR / "asker_checkpoints"
STRETCH_DEFAULTS = dict(seeds=(0, 2), quiet=100, normal=20, eval_every=5, quiet_lengths=(20, 50, 200))

# name → (what changes, settings). Each starts from the same checkpoint and keeps its setting for the
# stretch and the ordinary batches after it.
STRETCH_REMEDIES = {
    "baseline": ("Adam 1e-3, Keras's mean reduction, w = neg/pos (the asker's set-up)", {}),
    "shuffled": ("ordinary shuffled batches instead of the stretch (every batch holds positives)", {"quiet": 0}),
    "lower_lr": ("learning rate 3e-4 from the checkpoint on", {"learning_rate": 3e-4}),
    "global_clipnorm": ("gradients clipped to global norm 0.2", {"clipnorm": 0.2}),
    "epsilon_1e-3": ("Adam's ε = 1e-3 (default 1e-7)", {"adam": {"epsilon": 1e-3}}),
    "beta2_0.99": ("Adam's β₂ = 0.99 (default 0.999): v forgets in ~100 steps", {"adam": {"beta_2": 0.99}}),
    "amsgrad": ("AMSGrad: Adam with v̂ the running maximum of v", {"adam": {"amsgrad": True}}),
    "normalised_loss": ("loss Σ(w·l)/Σw (reduction by the weights' sum)", {"normalise": True}),
    "focal": ("focal loss, γ = 2, α = 0.75 on positives, with the per-step weights", {"alpha": (0.75, 0.25),
                                                                                      "gamma": 2.0}),
}
STRETCH_COLUMNS = ["seed", "remedy", "quiet", "normal", "checkpoint_step", "pr_auc_checkpoint",
                   "quiet_loss_last", "first_normal_bce", "positives_first_normal", "missed_first_normal",
                   "pr_auc_after_quiet", "recovery_steps", "pr_auc_final", "max_batch_bce_after", "seconds"]


def checkpoint_path(seed: int, directory=None):
    """seed<N>.npz in `directory` (default CHECKPOINT_DIR, the committed ones)."""
    return Path(directory or CHECKPOINT_DIR) / f"seed{seed}.npz"


def save_checkpoint(trainer, path, **meta) -> None:
    """Model weights, every optimizer variable (by name) and `meta` (JSON) in one .npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i}": w for i, w in enumerate(trainer.model.get_weights())}
    arrays.update({f"opt:{v.name}": v.numpy() for v in trainer.optimizer.variables})
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)


def load_checkpoint(trainer, path, learning_rate: float | None = None) -> dict:
    """Restore weights and Adam's state; AMSGrad's running maximum of v starts at v. Returns the metadata."""
    with np.load(path) as z:
        weights = [z[f"w{i}"] for i in range(len(trainer.model.get_weights()))]
        saved = {k[4:]: z[k] for k in z.files if k.startswith("opt:")}
        meta = json.loads(str(z["meta"]))
    trainer.model.set_weights(weights)
    for v in trainer.optimizer.variables:
        name = v.name.replace("_velocity_hat", "_velocity")
        if name not in saved:
            raise ValueError(f"{path}: no saved value for the optimizer variable {v.name}")
        v.assign(saved[name].astype(v.dtype))
    trainer.optimizer.learning_rate = learning_rate or meta["learning_rate"]
    return meta


def make_checkpoint(seed: int, steps: int, *, loss=None, step=None, progress: bool = False) -> dict:
    """Train asker_run(seed, steps) — the first `steps` of the committed row — and save its state."""
    run = asker_run(seed, steps=steps, loss=loss, step=step, evaluate=False, progress=progress)
    trainer = trainer_for(ASKER_DEFAULTS["units"], loss=loss, step=step, jit_compile=False)
    split = asker_split(seed)
    pr_auc = imb.pr_auc(split.test.y, trainer.predict(split.test.x))
    meta = {"seed": seed, "step": steps, "learning_rate": ASKER_DEFAULTS["learning_rate"],
            "pr_auc": round(float(pr_auc), 4), "positive_weight": run["positive_weight"]}
    save_checkpoint(trainer, checkpoint_path(seed), **meta)
    return meta


def quiet_batches(series: imb.Series, n: int, batch_size: int, seed: int) -> list:
    """n batches of `batch_size` series drawn (without replacement within a batch) from the series
    that hold no labelled positive: x (B, T, 1), y (B, T)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(series.y.sum(axis=1) == 0)
    return [(series.x[idx], series.y[idx]) for idx in
            (np.sort(rng.choice(pool, batch_size, replace=False)) for _ in range(n))]


def normal_batches(series: imb.Series, n: int, batch_size: int, seed: int) -> list:
    """n ordinary batches: consecutive slices of fresh shuffles of all series."""
    rng = np.random.default_rng(seed)
    out, per_epoch = [], len(series.x) // batch_size
    while len(out) < n:
        order = rng.permutation(len(series.x))
        out += [np.sort(order[b * batch_size:(b + 1) * batch_size]) for b in range(per_epoch)]
    return [(series.x[idx], series.y[idx]) for idx in out[:n]]


def weighted_bce(y, p, w) -> float:
    """Keras's weighted BCE, mean reduction: Σ(w·l)/(B·T) — the one scale every remedy is compared on."""
    return float(np.mean(w * imb.bce_np(y, p)))


def stretch_run(seed: int, remedy: str = "baseline", *, quiet: int | None = None, normal: int | None = None,
                loss=None, step=None, progress: bool = False, checkpoint_dir=None) -> dict:
    """From checkpoint_path(seed, checkpoint_dir): `quiet` positive-free batches, then `normal` ordinary ones, with the
    remedy's settings (STRETCH_REMEDIES) from the checkpoint on. Returns the row's values and the
    per-step losses (`step_loss`: the remedy's own loss; `batch_bce`: {step index: weighted BCE before
    that step's update} from the last quiet batch on) and the evaluations [(ordinary steps, PR-AUC)]."""
    from tqdm.auto import tqdm
    import tensorflow as tf
    if remedy not in STRETCH_REMEDIES:
        raise ValueError(f"remedy must be one of {sorted(STRETCH_REMEDIES)}, got {remedy!r}")
    settings = STRETCH_REMEDIES[remedy][1]
    quiet = settings.get("quiet", STRETCH_DEFAULTS["quiet"] if quiet is None else quiet)
    normal = STRETCH_DEFAULTS["normal"] if normal is None else normal
    cfg = ASKER_DEFAULTS
    split = asker_split(seed)
    trainer = trainer_for(cfg["units"], loss=loss, step=step, jit_compile=False, adam=settings.get("adam"))
    meta = load_checkpoint(trainer, checkpoint_path(seed, checkpoint_dir), settings.get("learning_rate"))
    w_pos = meta["positive_weight"]
    yv, xv = split.test.y, split.test.x
    bs = cfg["batch_size"]
    # the stretch and the ordinary batches: the same draws for every remedy of this seed
    batches = quiet_batches(split.train, quiet, bs, seed + 1) + normal_batches(split.train, normal + 1, bs, seed + 2)
    control = quiet == 0
    if control:   # as many ordinary batches in the stretch's place
        quiet = STRETCH_DEFAULTS["quiet"]
        batches = normal_batches(split.train, quiet + normal + 1, bs, seed + 2)
    alpha, gamma = settings.get("alpha", (1.0, 1.0)), settings.get("gamma", 0.0)
    consts = [tf.constant(v, tf.float32) for v in (alpha[0], alpha[1], gamma, float(settings.get("normalise", False)),
                                                   settings.get("clipnorm") or trainer.NO_CLIP)]
    start = time.perf_counter()
    pr_auc_checkpoint = imb.pr_auc(yv, trainer.predict(xv))
    step_loss, batch_bce, evals, first = [], {}, [], {}
    for k, (xb, yb) in enumerate(tqdm(batches[:quiet + normal], desc=f"{remedy}, seed {seed}", disable=not progress,
                                      leave=False)):
        wb = imb.timestep_weights(yb, w_pos)
        if k >= quiet - 1:   # the last quiet batch and the ordinary ones: weighted BCE before the update
            p_before = trainer.predict(xb)
            batch_bce[k] = weighted_bce(yb, p_before, wb)
        if k == quiet:       # the first ordinary batch after the stretch
            pos = yb == 1
            first = {"positives": int(pos.sum()), "missed": int((p_before[pos] < 0.5).sum())}
            evals.append((0, imb.pr_auc(yv, trainer.predict(xv))))
        step_loss.append(float(trainer._step(xb, yb, wb, *consts)[0]))
        if k >= quiet and (k + 1 - quiet) % STRETCH_DEFAULTS["eval_every"] == 0:
            evals.append((k + 1 - quiet, imb.pr_auc(yv, trainer.predict(xv))))
    seconds = time.perf_counter() - start
    target = cfg["fit_target"]
    after = [a for _, a in evals]
    recovery = 0 if after[0] >= target else next((s for s, a in evals if a >= target), float("nan"))
    return {"seed": seed, "remedy": remedy, "quiet": 0 if control else quiet, "normal": normal,
            "checkpoint_step": meta["step"], "pr_auc_checkpoint": pr_auc_checkpoint,
            "quiet_loss_last": batch_bce[quiet - 1], "first_normal_bce": batch_bce[quiet],
            "positives_first_normal": first["positives"], "missed_first_normal": first["missed"],
            "pr_auc_after_quiet": after[0], "recovery_steps": recovery, "pr_auc_final": after[-1],
            "max_batch_bce_after": max(v for k, v in batch_bce.items() if k >= quiet), "seconds": seconds,
            "step_loss": np.array(step_loss), "batch_bce": batch_bce, "evals": evals}


def stretch_row(run: dict) -> dict:
    """One data/remedies.csv row of a stretch_run."""
    def r(v, d):
        return "" if isinstance(v, float) and np.isnan(v) else (int(v) if d == 0 else round(float(v), d))
    return {"seed": run["seed"], "remedy": run["remedy"], "quiet": run["quiet"], "normal": run["normal"],
            "checkpoint_step": run["checkpoint_step"], "pr_auc_checkpoint": r(run["pr_auc_checkpoint"], 4),
            "quiet_loss_last": r(run["quiet_loss_last"], 6), "first_normal_bce": r(run["first_normal_bce"], 5),
            "positives_first_normal": run["positives_first_normal"], "missed_first_normal": run["missed_first_normal"],
            "pr_auc_after_quiet": r(run["pr_auc_after_quiet"], 4), "recovery_steps": r(run["recovery_steps"], 0),
            "pr_auc_final": r(run["pr_auc_final"], 4), "max_batch_bce_after": r(run["max_batch_bce_after"], 5),
            "seconds": round(run["seconds"], 1)}


def summarise_stretch(rows: list[dict], quiet: int | None = None) -> list[dict]:
    """Per remedy, over the seeds of data/remedies.csv at the stretch `quiet` (default STRETCH_DEFAULTS';
    the shuffled control whatever its length): the spike (median and largest weighted BCE of the first
    ordinary batch), its ratio to the last quiet batch, misses, the PR-AUC after the stretch, the recovery
    (median ordinary steps back to the target; seeds that did not recover) and the final PR-AUC."""
    quiet = STRETCH_DEFAULTS["quiet"] if quiet is None else quiet
    out = []
    for name, (what, settings) in STRETCH_REMEDIES.items():
        rs = [r for r in rows if r["remedy"] == name and (r["quiet"] == quiet or settings.get("quiet") == 0)]
        if not rs:
            continue
        rec = [r["recovery_steps"] for r in rs if r["recovery_steps"] != ""]
        out.append({"remedy": name, "what changes": what, "seeds": len(rs),
                    "first ordinary batch (median)": float(np.median([r["first_normal_bce"] for r in rs])),
                    "first ordinary batch (largest)": max(r["first_normal_bce"] for r in rs),
                    "positives missed (median)": float(np.median([r["missed_first_normal"] for r in rs])),
                    "PR-AUC after the stretch (median)": float(np.median([r["pr_auc_after_quiet"] for r in rs])),
                    "steps back to the target (median)": float(np.median(rec)) if rec else float("nan"),
                    "seeds not back": len(rs) - len(rec),
                    "final PR-AUC (median)": float(np.median([r["pr_auc_final"] for r in rs]))})
    return out


# The remedies that change the training from its first step, and whose cost there the asker would pay:
# a lower learning rate (the asker's own complaint: too slow) and Adam's ε (the optimizer setting that shrinks
# the stretch's spike without losing the recovery).
# Each is data/asker_regime.csv's run of the seed with that one setting changed, for a fixed 600 steps, the
# steps in which the baseline fitted on both seeds (no early end at the fit; the baseline's PR-AUC at that step
# is in its row's pr_auc_curve).
SCRATCH_DEFAULTS = dict(seeds=STRETCH_DEFAULTS["seeds"], remedies=("lower_lr", "epsilon_1e-3"), steps=600)
SCRATCH_COLUMNS = ["remedy"] + ASKER_COLUMNS


def scratch_run(seed: int, remedy: str, *, steps: int | None = None, evaluate: bool = True, loss=None, step=None,
                progress: bool = False) -> dict:
    """asker_run(seed) from initialisation with the remedy's learning rate / Adam settings (STRETCH_REMEDIES),
    on the same data, initial weights and batch order as the seed's asker_regime.csv row."""
    if remedy not in SCRATCH_DEFAULTS["remedies"]:
        raise ValueError(f"remedy must be one of {SCRATCH_DEFAULTS['remedies']}, got {remedy!r}")
    settings = STRETCH_REMEDIES[remedy][1]
    overrides = {"learning_rate": settings["learning_rate"]} if "learning_rate" in settings else {}
    run = asker_run(seed, steps=steps or SCRATCH_DEFAULTS["steps"], evaluate=evaluate, loss=loss, step=step,
                    progress=progress, adam=settings.get("adam"), desc=f"{remedy} from scratch, seed {seed}",
                    after_fit_steps=None, **overrides)
    return {**run, "remedy": remedy}


def scratch_row(run: dict) -> dict:
    """One data/from_scratch.csv row: the remedy, then asker_row's columns."""
    return {"remedy": run["remedy"], **asker_row(run)}
