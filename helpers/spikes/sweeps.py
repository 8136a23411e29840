"""Sweeps over seeds for the committed tables, and their summaries (lesson 06).

    SWEEP_DEFAULTS          the sizes every committed row is trained at
    spike_map_cell(...)     one (learning rate, positive weight) cell, one row per seed
    summarise_spike_map     the table the notebook shows
(the remedies table is helpers.spikes.stretch's)
"""
from __future__ import annotations

import numpy as np

from .. import imbalanced as imb
from .flags import wilson_interval
from .training import make_split, train_run


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


def _weight_key(w: str) -> float:
    try:
        return float(w)
    except ValueError:
        return float("inf")
