"""Lesson 04's long runs as a committed table: data/long_runs.csv, one row per evaluated epoch.

Section 3 of lesson 04 trains three networks for `long_epochs` epochs (clean labels; dropout + L2;
noisy labels) and splits the reported gap into BN mode mismatch and overfitting every few epochs.
That is most of the lesson's run time, so the default run reads the rows from the table and
retrains only the first evaluated epochs of the clean run, which it checks against the table.
The runs themselves are the lesson's own code: the table is made by executing the notebook.

    LongRuns(mode, settings)          the runs of one notebook run: committed, live or regenerate
    read_table(path)                  {(settings, run): (rows, validation at end, after precise BN)}
    max_difference(a, b)              largest absolute difference of two row arrays of one run
    python -m helpers.long_runs [--seeds 0,1,2] [--out data/long_runs.csv]
                                      regenerate the table (executes notebook 04 once per seed
                                      with long_runs="regenerate"), with provenance
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from .workbook import committed
from .workbook.committed import parse_seeds

TABLE = committed.DATA_DIR / "long_runs.csv"
NOTEBOOK = "04_batchnorm_running_statistics"
SETTINGS = ("seed", "long_epochs", "label_noise_fraction", "batch_size", "train_size")
ROW = ("epoch", "fit_accuracy", "bn_mode_mismatch", "overfitting", "reported_gap", "validation")
COLUMNS = [*SETTINGS, "run", *ROW, "validation_at_end", "validation_precise_bn_at_end"]
MODES = ("committed", "live", "regenerate")
# every row is an accuracy or a difference of accuracies on 1,409 training and 359 validation images:
# this machine reproduces them exactly; another CPU may round a few sums differently and flip an image
# or two near a decision boundary, so recomputed rows may differ by up to 4 validation images
TOLERANCE = 4 / 359


def _key(settings: dict) -> tuple:
    return tuple(round(float(settings[k]), 6) for k in SETTINGS)


def read_table(path: str | Path = TABLE) -> dict:
    """{(settings key, run name): (rows (n, 6) array, validation at the end, after precise BN)}."""
    path = Path(path)
    if not path.exists():
        return {}
    grouped: dict = {}
    for r in committed.read_csv_rows(path, keep_text=("run",)):
        entry = grouped.setdefault((_key(r), r["run"]), ([], r["validation_at_end"], r["validation_precise_bn_at_end"]))
        entry[0].append([float(r[c]) for c in ROW])
    return {k: (np.array(rows), float(a), float(b)) for k, (rows, a, b) in grouped.items()}


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two runs' rows (inf if their epochs differ)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or not np.array_equal(a[:, 0], b[:, 0]):
        return float("inf")
    return float(np.max(np.abs(a - b)))


class LongRuns:
    """The long runs of one notebook run.

    mode "committed": a run found in the table (same settings) is read from it, any other is
    trained; "live": every run is trained, and compared with the table where it has the run;
    "regenerate": every run is trained and nothing is compared (what `python -m helpers.long_runs`
    uses). get(name, train) returns (rows, validation at the end, after precise BN), calling
    train() -> that triple when the run is not read. save(path) writes the trained runs as table
    rows; `compared` maps each compared run to its largest difference from the table.
    """

    def __init__(self, mode: str, settings: dict, path: str | Path = TABLE):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        self.mode, self.settings = mode, {k: settings[k] for k in SETTINGS}
        self.table = read_table(path) if mode != "regenerate" else {}
        self.read: list[str] = []
        self.trained: dict[str, tuple] = {}
        self.compared: dict[str, float] = {}

    def table_entry(self, name: str):
        """The table's (rows, validation at end, after precise BN) for `name` at these settings, or None."""
        return self.table.get((_key(self.settings), name))

    def get(self, name: str, train):
        found = self.table_entry(name)
        if self.mode == "committed" and found is not None:
            self.read.append(name)
            return found
        result = train()
        self.trained[name] = result
        if found is not None:
            self.compared[name] = max(max_difference(result[0], found[0]),
                                      abs(result[1] - found[1]), abs(result[2] - found[2]))
        return result

    def rows(self) -> list[dict]:
        out = []
        for name, (rows, at_end, precise) in self.trained.items():
            for r in rows:
                out.append({**self.settings, "run": name, **dict(zip(ROW, (int(r[0]), *map(float, r[1:])))),
                            "validation_at_end": at_end, "validation_precise_bn_at_end": precise})
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        committed.start_table(path, COLUMNS)
        committed.append_rows(path, COLUMNS, self.rows())
        return path


def rows_path(build: Path, seed: int) -> Path:
    """Where a notebook run in mode "live" or "regenerate" writes the runs it trained."""
    return Path(build) / "long_runs" / f"seed-{seed}.csv"


def regenerate(seeds: list[int], out: str | Path = TABLE, command: str = "") -> Path:
    """Execute notebook 04 once per seed with long_runs="regenerate" and collect its rows into `out`,
    with <out>.provenance.json. The other parameters are the notebook's defaults."""
    from tqdm.auto import tqdm
    from .workbook.notebooks import execute, notebook_path
    started = committed.utc_now()
    rows = []
    with tempfile.TemporaryDirectory(prefix="long_runs_") as tmp:
        for seed in tqdm(seeds, desc="notebook 04, long runs"):
            build = Path(tmp) / f"seed-{seed}"
            result = execute(notebook_path(NOTEBOOK), build / "out.ipynb",
                             parameters={"seed": seed, "long_runs": "regenerate"}, build_dir=build)
            if not result.ok:
                raise SystemExit(f"notebook {NOTEBOOK} failed for seed {seed}: {result.error}")
            with open(rows_path(build, seed), newline="") as fh:
                rows.extend(csv.DictReader(fh))
    out = Path(out)
    committed.start_table(out, COLUMNS)
    committed.append_rows(out, COLUMNS, rows)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=len(rows), seeds=seeds, notebook=NOTEBOOK))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.long_runs",
                                     description="Regenerate data/long_runs.csv (lesson 04's long runs) with provenance.")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", default=str(TABLE),
                        help="the CSV to write (default data/long_runs.csv)")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    command = "python -m helpers.long_runs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    path = regenerate(seeds, args.out, command.strip())
    print(f"wrote {path} and {committed.provenance_path(path).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
