"""The committed tables of lesson 06: columns, parsing and row comparison.

    SPIKE_MAP_COLUMNS / ASKER_COLUMNS     the CSV headers (data/remedies.csv's: stretch.STRETCH_COLUMNS)
    read_spike_map(path)                  rows with numbers parsed
    column_spreads(live, rows, columns)   a recomputed row judged by the committed seeds' spread
                                          (helpers.workbook.spread)
"""
from __future__ import annotations

from pathlib import Path

from ..workbook.spread import column_spreads  # noqa: F401
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



def read_spike_map(path: str | Path) -> list[dict]:
    """Rows of a spike-map CSV: numbers parsed; positive_weight ("neg/pos" or a number) kept as written."""
    return read_csv_rows(path, keep_text=("positive_weight",))


# reading, writing and provenance are helpers.workbook.committed's, re-exported here
