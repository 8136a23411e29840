"""Sweeps over seeds for the committed tables, and their summaries (lesson 06).

    SWEEP_DEFAULTS          the sizes every committed row is trained at
    spike_map_cell(...)     one (learning rate, positive weight) cell, one row per seed
    remedy_runs(...)        every remedy on one seed's data at one learning rate
    remedy_row(...)         one remedies.csv row of a run
    summarise_spike_map / summarise_remedies / choose_remedy   the tables the notebook shows
"""
from __future__ import annotations

import numpy as np

from .. import imbalanced as imb
from .flags import wilson_interval
from .training import RunResult, make_split, train_run


SWEEP_DEFAULTS = dict(n_series=300, timesteps=128, frac_series_with_anomaly=0.2, anomalies_per_series=2,
                      label_jitter=0.0, amplitude=2.0, epochs=30, batch_size=32, units=16, monitor_series=32)


def spike_map_cell(learning_rate: float, positive_weight: float | str, seeds, *, progress: bool = False,
                   loss=None, step=None, **overrides) -> list[dict]:
    """Run one (learning rate, positive weight) cell of the spike map for each
    seed (data, split and initialisation all from that seed). positive_weight
    may be "neg/pos" (computed from that seed's training labels). Returns one
    row per seed: spiked, max ratio / jump, PR-AUC, seconds. loss, step: train_run's (None: the defaults)."""
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
                           seed=seed, progress=progress, loss=loss, step=step)
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


def remedy_runs(seed: int, learning_rate: float, *, clip_percentiles=(50, 10), clip_norms=None,
                progress: bool = False, desc_prefix: str = "", loss=None, step=None,
                **overrides) -> tuple[list[RunResult], dict]:
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
                  batch_size=cfg["batch_size"], units=cfg["units"], seed=seed, progress=progress,
                  loss=loss, step=step)
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


RECOMPUTABLE_REMEDIES = ("weighted", "lower_lr", "prior_bias", "focal", "normalised_weights", "windows")


def remedy_row_for(seed: int, remedy: str, learning_rate: float, *, progress: bool = False,
                   loss=None, step=None, **overrides) -> dict:
    """Recompute one remedies.csv row (a remedy that needs no baseline run, i.e. not `clip`)
    with the sweep's own settings (SWEEP_DEFAULTS unless overridden). `learning_rate` is the
    table's base rate (the `weighted` row's); `lower_lr` scales it as in the sweep, and its
    CSV row records the scaled rate. Returns the CSV row."""
    if remedy not in RECOMPUTABLE_REMEDIES:
        raise ValueError(f"remedy must be one of {RECOMPUTABLE_REMEDIES} (clip needs the baseline's "
                         f"gradient norms), got {remedy!r}")
    cfg = {**SWEEP_DEFAULTS, **overrides}
    split = make_split(cfg["n_series"], cfg["timesteps"], frac_series_with_anomaly=cfg["frac_series_with_anomaly"],
                       anomalies_per_series=cfg["anomalies_per_series"], label_jitter=cfg["label_jitter"],
                       amplitude=cfg["amplitude"], seed=seed, monitor_series=cfg["monitor_series"])
    res, _ = train_run(split, remedy=remedy, learning_rate=learning_rate,
                       positive_weight=imb.positive_weight_for(split.train.y), epochs=cfg["epochs"],
                       batch_size=cfg["batch_size"], units=cfg["units"], seed=seed, progress=progress,
                       desc=f"{remedy} seed {seed} (committed row)", loss=loss, step=step)
    return remedy_row(res)
