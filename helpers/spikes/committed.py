"""The committed tables of lesson 06: columns, parsing and row comparison.

    SPIKE_MAP_COLUMNS / ASKER_COLUMNS     the CSV headers (data/remedies.csv's: stretch.STRETCH_COLUMNS)
    read_spike_map(path)                  rows with numbers parsed
    matches_row(live, committed, ...)     compare a recomputed row with the committed one
"""
from __future__ import annotations

import math
from pathlib import Path

from ..workbook.committed import (DATA_DIR, append_rows, provenance, provenance_path, read_csv_rows,  # noqa: F401
                                  start_table, utc_now, write_provenance)

SWEEP_COLUMNS = ["learning_rate", "positive_weight", "weight_value", "seed", "spiked", "n_spikes",
                 "max_monitored_ratio", "max_monitored_jump", "max_batch_ratio", "pr_auc",
                 "event_recall", "seconds"]
SPIKE_MAP_COLUMNS = SWEEP_COLUMNS

ASKER_COLUMNS = ["seed", "label_jitter", "timesteps", "batch_size", "learning_rate", "steps", "positive_share",
                 "weight_value", "fitted_step", "pr_auc_at_fit", "pr_auc_final", "spiked_after_fit", "spikes_after_fit",
                 "max_monitored_ratio_after_fit", "max_monitored_jump_after_fit", "median_batch_loss_after_fit",
                 "max_batch_loss_after_fit", "positives_in_max_batch", "monitor_loss_at_check",
                 "batch_loss_sum_to_check", "pr_auc_curve", "seconds"]

# columns that are measurements of the run (compared when a row is recomputed); `seconds` is wall time
# on whatever machine ran it and is never compared
COMPARED = ("max_monitored_ratio", "max_monitored_jump", "pr_auc", "event_recall")


def read_spike_map(path: str | Path) -> list[dict]:
    """Rows of a spike-map CSV: numbers parsed; positive_weight ("neg/pos" or a number) kept as written."""
    return read_csv_rows(path, keep_text=("positive_weight",))


def matches_row(live: dict, committed: dict, *, rel_tol: float, abs_tol: float = 1e-3,
                columns=COMPARED) -> tuple[bool, list[str]]:
    """Does a recomputed row reproduce the committed one? `spiked` must be equal and every
    compared column within rel_tol (relative) or abs_tol (absolute, for values near 0).
    Returns (ok, the differences as readable strings)."""
    diffs = []
    if int(live["spiked"]) != int(committed["spiked"]):
        diffs.append(f"spiked {live['spiked']} vs {committed['spiked']}")
    for c in columns:
        a, b = float(live[c]), float(committed[c])
        if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol):
            diffs.append(f"{c} {a:.5g} vs {b:.5g}")
    return (not diffs, diffs)

# reading, writing and provenance are helpers.workbook.committed's, re-exported here
