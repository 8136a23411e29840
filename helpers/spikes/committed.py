"""The committed tables of lesson 06: columns, reading, writing, provenance.

    SPIKE_MAP_COLUMNS / REMEDY_COLUMNS / ASKER_COLUMNS    the CSV headers
    read_spike_map(path), read_csv_rows(path)   rows with numbers parsed
    append_rows(path, columns, rows)      append (writing the header for a new file)
    provenance(command, ...)              command, versions, date and machine of a regeneration
    write_provenance(csv_path, info)      <table>.provenance.json next to the CSV
    matches_row(live, committed, ...)     compare a recomputed row with the committed one
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

SWEEP_COLUMNS = ["learning_rate", "positive_weight", "weight_value", "seed", "spiked", "n_spikes",
                 "max_monitored_ratio", "max_monitored_jump", "max_batch_ratio", "pr_auc",
                 "event_recall", "seconds"]
SPIKE_MAP_COLUMNS = SWEEP_COLUMNS

REMEDY_COLUMNS = ["remedy", "clipnorm", "seed", "learning_rate", "positive_weight", "spiked", "n_spikes",
                  "max_monitored_ratio", "max_monitored_jump", "max_batch_ratio", "pr_auc",
                  "recall_at_p0.5", "event_recall", "false_alarms_per_series", "seconds"]

ASKER_COLUMNS = ["seed", "label_jitter", "timesteps", "batch_size", "learning_rate", "steps", "positive_share",
                 "weight_value", "fitted_step", "pr_auc_at_fit", "pr_auc_final", "spiked_after_fit", "spikes_after_fit",
                 "max_monitored_ratio_after_fit", "max_monitored_jump_after_fit", "median_batch_loss_after_fit",
                 "max_batch_loss_after_fit", "positives_in_max_batch", "monitor_loss_at_check",
                 "batch_loss_sum_to_check", "seconds"]

# columns that are measurements of the run (compared when a row is recomputed); `seconds` is wall time
# on whatever machine ran it and is never compared
COMPARED = ("max_monitored_ratio", "max_monitored_jump", "pr_auc", "event_recall")


def read_csv_rows(path: str | Path, keep_text: tuple[str, ...] = ()) -> list[dict]:
    """CSV rows with numbers parsed where they parse (ints as int; empty stays ''); the columns
    named in `keep_text` are kept as written."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rec = {}
            for k, v in row.items():
                if k in keep_text:
                    rec[k] = v
                    continue
                try:
                    rec[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                except ValueError:
                    rec[k] = v
            out.append(rec)
    return out


def read_spike_map(path: str | Path) -> list[dict]:
    """Rows of a spike-map CSV: numbers parsed; positive_weight ("neg/pos" or a number) kept as written."""
    return read_csv_rows(path, keep_text=("positive_weight",))


def start_table(path: str | Path, columns: list[str]) -> None:
    """A new CSV holding only the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerow(columns)


def append_rows(path: str | Path, columns: list[str], rows: list[dict]) -> None:
    """Append rows to a CSV (as written by start_table)."""
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        for row in rows:
            writer.writerow(row)


def provenance(command: str, *, started: datetime, finished: datetime, rows: int, **extra) -> dict:
    """What a regeneration ran on: the command, library versions, UTC dates, machine and CPU count."""
    import keras
    import numpy as np
    import tensorflow as tf
    return {"command": command, "rows": rows,
            "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished_utc": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_seconds": round((finished - started).total_seconds(), 1),
            "python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "machine": platform.platform(), "processor": platform.machine(),
            "cpu_count": os.cpu_count(), "env": {k: os.environ.get(k, "") for k in
                                                 ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")},
            **extra}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def provenance_path(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.stem + ".provenance.json")


def write_provenance(csv_path: str | Path, info: dict) -> Path:
    """Write <table>.provenance.json next to the CSV; returns its path."""
    path = provenance_path(csv_path)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


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


DATA_DIR = Path(__file__).resolve().parents[2] / "data"   # the repository's data/, from any working directory
