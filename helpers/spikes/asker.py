"""The asker's regime (lesson 06): Adam at 1e-3, batch 128, w = neg/pos, long series, trained toward a fit.

    ASKER_DEFAULTS        the sizes every row of data/asker_regime.csv is trained at
    asker_split(seed, …)  train / monitor / validation series of one seed at those sizes
    asker_run(seed, …)    one run: validation PR-AUC every `eval_every` steps, the step it first
                          reaches `fit_target`, and the spikes counted only after that step
    asker_row(run)        one CSV row (committed.ASKER_COLUMNS)

A run trains until it has fitted and then `after_fit_steps` more optimizer steps, or `steps` in all
if it never fits (the cap). It is "fitted" from the first evaluation whose validation PR-AUC is
≥ fit_target; spikes on the fixed monitoring set (the lesson's rule, flags.flag_spikes) and the
batch losses are summarised over the steps after that point only, so a spike is never confused with
the early descent. after_fit_steps=None trains all `steps` (from-scratch runs of a fixed length). The loss
and the training step are arguments, as in train_run (None: the defaults per_step_loss / adam_step).
"""
from __future__ import annotations

import time

import numpy as np

from .. import imbalanced as imb
from .flags import flag_spikes, running_median, running_median_ratio
from .training import make_split, trainer_for

# 2 × LSTM(16), Adam 1e-3, the asker's batch of 128, 512-step series: 20 % of the series hold 2 labelled
# steps, so the positive share is about 0.2·2/512 ≈ 0.08 % (the asker: 0.2·2/4096 ≈ 0.01 %) and a batch
# holds about 50 positives (the asker: about 51; data/asker_regime.csv gives each seed's share). Not XLA: on a CPU a plain graph's step hardly grows
# with the batch, XLA's grows in proportion.
STEPS_CAP = 2000   # a seed that has not fitted by then is reported as not fitted
ASKER_DEFAULTS = dict(n_series=1400, timesteps=512, frac_series_with_anomaly=0.2, anomalies_per_series=2,
                      amplitude=2.0, learning_rate=1e-3, units=16, batch_size=128, steps=STEPS_CAP,
                      after_fit_steps=200, eval_every=50, fit_target=0.8, monitor_series=32, monitor_every=2,
                      check_step=30)


def asker_split(seed: int, *, label_jitter: float = 0.0, **overrides):
    """make_split at ASKER_DEFAULTS' sizes; the test part serves as validation series."""
    cfg = {**ASKER_DEFAULTS, **overrides}
    return make_split(cfg["n_series"], cfg["timesteps"], frac_series_with_anomaly=cfg["frac_series_with_anomaly"],
                      anomalies_per_series=cfg["anomalies_per_series"], label_jitter=label_jitter,
                      amplitude=cfg["amplitude"], seed=seed, monitor_series=cfg["monitor_series"])


def asker_run(seed: int, *, label_jitter: float = 0.0, steps: int | None = None, loss=None, step=None,
              evaluate: bool = True, progress: bool = False, desc: str | None = None, checkpoint_to=None,
              adam: dict | None = None, **overrides) -> dict:
    """One seeded run at ASKER_DEFAULTS (overridable). steps: stop after this many optimizer steps
    at most (default ASKER_DEFAULTS["steps"], the cap; fewer re-trace the first steps of a committed row); the
    run ends `after_fit_steps` steps after its fit (an override; None: never early). Returns the
    per-step batch_loss, grad_norm, batch_positives, monitor_steps / monitor_loss, the evaluations
    (eval_steps, eval_pr_auc), fitted_step (None if never fitted) and the summary row's values.
    evaluate=False skips the validation PR-AUC (the training is the same), for re-tracing a row's first steps.
    checkpoint_to: a path; the model and Adam's state are saved there (stretch.save_checkpoint) at the fitted
    step, if the run fits before its last step (the training is the same). adam: Adam's other settings
    (e.g. {"epsilon": 1e-3}; None: Keras's defaults)."""
    cfg = {**ASKER_DEFAULTS, **overrides}
    n_steps = int(steps or cfg["steps"])
    split = asker_split(seed, label_jitter=label_jitter, **overrides)
    tr = split.train
    w_pos = imb.positive_weight_for(tr.y)
    trainer = trainer_for(cfg["units"], loss=loss, step=step, jit_compile=False, adam=adam)
    trainer.reset(seed, cfg["learning_rate"])
    xv, yv = split.test.x, split.test.y
    eval_steps, eval_pr_auc = [], []

    fit = {}   # the step of the first evaluation at or above fit_target

    def score(k):
        eval_steps.append(k)
        eval_pr_auc.append(imb.pr_auc(yv, trainer.predict(xv)))

    def after_step(k):
        if evaluate and (k % cfg["eval_every"] == 0 or k == n_steps):
            score(k)
            if "step" not in fit and eval_pr_auc[-1] >= cfg["fit_target"]:
                fit["step"] = k
                if checkpoint_to is not None and k < n_steps:
                    from .stretch import save_checkpoint
                    save_checkpoint(trainer, checkpoint_to, seed=seed, step=k, learning_rate=cfg["learning_rate"],
                                    pr_auc=round(float(eval_pr_auc[-1]), 4), positive_weight=w_pos)
        last = n_steps if cfg["after_fit_steps"] is None or "step" not in fit else \
            min(n_steps, fit["step"] + cfg["after_fit_steps"])
        if k >= last and evaluate and eval_steps[-1] != k:   # the run ends early: its final evaluation
            score(k)
        return k >= last

    batches_per_epoch = len(tr.x) // cfg["batch_size"]
    epochs = -(-n_steps // batches_per_epoch)
    mon = split.monitor
    start = time.perf_counter()
    log = trainer.fit(tr.x, tr.y, imb.timestep_weights(tr.y, w_pos), epochs=epochs, batch_size=cfg["batch_size"],
                      seed=seed, monitor=(mon.x, mon.y, imb.timestep_weights(mon.y, w_pos)),
                      monitor_every=cfg["monitor_every"], progress=progress,
                      desc=desc or f"Adam {cfg['learning_rate']:g}, seed {seed}", after_step=after_step)
    seconds = time.perf_counter() - start
    fitted = fit.get("step")
    trained = len(log["batch_loss"])   # the cap, or the fit + after_fit_steps
    return {"seed": seed, "label_jitter": label_jitter, "cfg": cfg, "positive_weight": w_pos,
            "positive_share": float(tr.y.mean()), **log, "eval_steps": np.array(eval_steps),
            "eval_pr_auc": np.array(eval_pr_auc, dtype=float), "fitted_step": fitted, "seconds": seconds,
            **after_fit_summary(log, fitted, trained, cfg["check_step"])}


def after_fit_summary(log: dict, fitted_step: int | None, n_steps: int, check_step: int | None = None) -> dict:
    """Spikes and batch losses over the steps after `fitted_step` (all NaN / 0 if never fitted): the
    monitored spike count (flags on the whole monitored curve, counted past the fit), the largest
    monitored ratio and jump there, the median and the largest batch loss there, and the positives
    of the batch with the largest loss. Also the monitored loss at `check_step` (default ASKER_DEFAULTS')
    and the sum of the batch losses up to it, which a re-run of a row's first steps is compared on."""
    ms, ml, bl = log["monitor_steps"], log["monitor_loss"], log["batch_loss"]
    check_step = check_step or ASKER_DEFAULTS["check_step"]
    at_check = float(ml[ms == check_step][0]) if (ms == check_step).any() else float("nan")
    out = {"monitor_loss_at_check": at_check, "batch_loss_sum_to_check": float(bl[:check_step].sum())}
    if fitted_step is None or fitted_step >= n_steps:
        return {**out, "spikes_after_fit": 0, "max_monitored_ratio_after_fit": float("nan"),
                "max_monitored_jump_after_fit": float("nan"), "median_batch_loss_after_fit": float("nan"),
                "max_batch_loss_after_fit": float("nan"), "positives_in_max_batch": -1}
    flags = flag_spikes(ml)
    after = ms > fitted_step
    ratio = running_median_ratio(ml)
    jumps = ml - running_median(ml)          # NaN where there are too few previous points
    tail = bl[fitted_step:]
    k = int(np.argmax(tail))
    return {**out, "spikes_after_fit": int((flags & after).sum()),
            "max_monitored_ratio_after_fit": float(np.nanmax(ratio[after])),
            "max_monitored_jump_after_fit": float(np.nanmax(jumps[after])),
            "median_batch_loss_after_fit": float(np.median(tail)), "max_batch_loss_after_fit": float(tail[k]),
            "positives_in_max_batch": int(log["batch_positives"][fitted_step + k])}


def asker_row(run: dict) -> dict:
    """One data/asker_regime.csv row of an asker_run."""
    cfg = run["cfg"]
    r = lambda v, d: "" if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), d)  # noqa: E731
    return {"seed": run["seed"], "label_jitter": run["label_jitter"], "timesteps": cfg["timesteps"],
            "batch_size": cfg["batch_size"], "learning_rate": cfg["learning_rate"], "steps": len(run["batch_loss"]),
            "positive_share": round(run["positive_share"], 7), "weight_value": round(run["positive_weight"], 2),
            "fitted_step": "" if run["fitted_step"] is None else run["fitted_step"],
            "pr_auc_at_fit": r(dict(zip(run["eval_steps"], run["eval_pr_auc"])).get(run["fitted_step"]), 4),
            "pr_auc_final": r(run["eval_pr_auc"][-1], 4) if len(run["eval_pr_auc"]) else "",
            "spiked_after_fit": int(run["spikes_after_fit"] > 0), "spikes_after_fit": run["spikes_after_fit"],
            "max_monitored_ratio_after_fit": r(run["max_monitored_ratio_after_fit"], 4),
            "max_monitored_jump_after_fit": r(run["max_monitored_jump_after_fit"], 5),
            "median_batch_loss_after_fit": r(run["median_batch_loss_after_fit"], 5),
            "max_batch_loss_after_fit": r(run["max_batch_loss_after_fit"], 4),
            "positives_in_max_batch": run["positives_in_max_batch"],
            "monitor_loss_at_check": r(run["monitor_loss_at_check"], 6),
            "batch_loss_sum_to_check": r(run["batch_loss_sum_to_check"], 5),
            "pr_auc_curve": " ".join(f"{s}:{a:.4f}" for s, a in zip(run["eval_steps"], run["eval_pr_auc"])),
            "seconds": round(run["seconds"], 1)}


def pr_auc_curve(row: dict) -> dict[int, float]:
    """A committed row's validation PR-AUC by step ({step: PR-AUC}), from its pr_auc_curve column."""
    return {int(s): float(a) for s, a in (item.split(":") for item in str(row["pr_auc_curve"]).split())}
