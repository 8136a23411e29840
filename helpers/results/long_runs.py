"""Lesson 04's long runs as a committed table: data/long_runs.csv, one row per evaluated epoch.

Sections 2–3 of lesson 04 train six networks for `long_epochs` epochs (clean labels; dropout + L2; noisy
labels, and on the same noisy labels the controls: GroupNorm, no normalization, BN + dropout + L2) and
split the reported gap into BN mode mismatch and overfitting every few epochs.
That is most of the lesson's run time, so the default run reads the rows from the table and
retrains only the first evaluated epochs of the clean run. A retrained row is one more sample of a
chaotic run: it is judged by the committed seeds' spread (helpers.workbook.spread), not by the row of
its own seed. The runs themselves are the lesson's own code: the table is made by executing the notebook.

    LongRuns(mode, settings)          the runs of one notebook run: committed, live or regenerate;
                                      .spreads(run, row) judges one retrained row by the committed seeds,
                                      .judge_trained(recomputed, ...) every row of the runs trained here,
                                      .judge_and_save(...) that, then their rows written (modes live, regenerate),
                                      .creep_samples(...) creep_summary per committed seed, and this run
    gap_creep, creep_summary          how one seed's noisy BN run's gap creeps after its warm-up
    creep_table, noisy_runs_table, plot_creep   the lesson's tables and figure of the creep
    read_long_runs(path)                  {(settings, run): (rows, validation at end, after precise BN)}
    row_spreads(row, seeds_rows, n_train, n_val)   one evaluated epoch's five quantities, judged
    python -m helpers.results.long_runs [--seeds 0,1,2] [--out data/long_runs.csv]
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

from ..workbook import committed
from ..workbook.committed import parse_seeds
from ..workbook.spread import Spread, binomial_se
from ..workbook.tables import Table

TABLE = committed.DATA_DIR / "long_runs.csv"
NOTEBOOK = "04_batchnorm_running_statistics"
SETTINGS = ("seed", "long_epochs", "label_noise_fraction", "batch_size", "train_size")
ROW = ("epoch", "fit_accuracy", "bn_mode_mismatch", "overfitting", "reported_gap", "validation")
COLUMNS = [*SETTINGS, "run", *ROW, "validation_at_end", "validation_precise_bn_at_end"]
MODES = ("committed", "live", "regenerate")


def _key(settings: dict) -> tuple:
    return tuple(round(float(settings[k]), 6) for k in SETTINGS)


def read_long_runs(path: str | Path = TABLE) -> dict:
    """{(settings key, run name): (rows (n, 6) array, validation at the end, after precise BN)}."""
    path = Path(path)
    if not path.exists():
        return {}
    grouped: dict = {}
    for r in committed.read_csv_rows(path, keep_text=("run",)):
        entry = grouped.setdefault((_key(r), r["run"]), ([], r["validation_at_end"], r["validation_precise_bn_at_end"]))
        entry[0].append([float(r[c]) for c in ROW])
    return {k: (np.array(rows), float(a), float(b)) for k, (rows, a, b) in grouped.items()}


def row_spreads(row, seeds_rows, n_train: int, n_val: int, same_seed=None) -> list[Spread]:
    """One retrained evaluated epoch, [epoch, fit accuracy, BN mode mismatch, overfitting, reported gap, validation],
    judged column by column by the committed seeds' rows at that epoch. Each column's resolution is the binomial
    standard error of the accuracies it is made of, from this row's values: fit's accuracy and the training set in
    inference and training mode on n_train images, validation on n_val; a difference adds their variances."""
    epoch, fit, mode, overfit, gap, val = (float(v) for v in row)
    train_inf = overfit + val
    train_mode = mode + train_inf
    se = {"fit": binomial_se(fit, n_train), "val": binomial_se(val, n_val),
          "inf": binomial_se(train_inf, n_train), "mode": binomial_se(train_mode, n_train)}
    both = lambda a, b: (se[a] ** 2 + se[b] ** 2) ** 0.5   # noqa: E731
    resolution = {"fit_accuracy": se["fit"], "bn_mode_mismatch": both("mode", "inf"), "overfitting": both("inf", "val"),
                  "reported_gap": both("fit", "val"), "validation": se["val"]}
    seeds_rows = [np.asarray(r, float) for r in seeds_rows]
    if not seeds_rows or any(r[0] != epoch for r in seeds_rows):
        raise ValueError(f"epoch {epoch:g}: the committed rows are of other epochs")
    return [Spread(f"epoch {epoch:.0f}: {col.replace('_', ' ')}", float(row[k]), [r[k] for r in seeds_rows],
                   resolution=resolution[col], same_seed=None if same_seed is None else float(same_seed[k]))
            for k, col in enumerate(ROW) if k > 0]


class LongRuns:
    """The long runs of one notebook run.

    mode "committed": a run found in the table (same settings) is read from it, any other is
    trained; "live": every run is trained, and compared with the table where it has the run;
    "regenerate": every run is trained and nothing is compared (what `python -m helpers.results.long_runs`
    uses). get(name, train) returns (rows, validation at the end, after precise BN), calling
    train() -> that triple when the run is not read. save(path) writes the trained runs as table
    rows; `compared` lists the runs trained here whose settings the table holds for some seed (every
    run in mode "live"; in mode "committed" those of a seed the table lacks), to be judged with `spreads`.
    """

    def __init__(self, mode: str, settings: dict, path: str | Path = TABLE):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        self.mode, self.settings = mode, {k: settings[k] for k in SETTINGS}
        self.table = read_long_runs(path) if mode != "regenerate" else {}
        self.read: list[str] = []
        self.trained: dict[str, tuple] = {}
        self.compared: list[str] = []

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
        if self.mode != "regenerate" and self.seeds_entries(name):   # any seed's run is one more sample
            self.compared.append(name)
        return result

    def seeds_entries(self, name: str) -> dict[int, tuple]:
        """{seed: (rows, validation at end, after precise BN)} of run `name` at these settings, any seed."""
        other = _key(self.settings)[1:]
        return {int(k[0]): entry for (k, run), entry in self.table.items() if run == name and k[1:] == other}

    def spreads(self, name: str, row, n_train: int, n_val: int) -> list[Spread]:
        """One retrained evaluated epoch of run `name`, judged by the committed seeds' rows at that epoch."""
        entries = self.seeds_entries(name)
        at = lambda rows: rows[int(np.flatnonzero(rows[:, 0] == row[0])[0])]   # noqa: E731
        own = entries.get(int(self.settings["seed"]))
        return row_spreads(row, [at(rows) for rows, _, _ in entries.values()], n_train, n_val,
                           same_seed=None if own is None else at(own[0]))

    def end_spreads(self, name: str, at_end: float, precise: float, n_val: int) -> list[Spread]:
        """A retrained run's validation accuracy at the end and after precise BN, judged by the committed seeds'."""
        entries = self.seeds_entries(name)
        own = entries.get(int(self.settings["seed"]))
        return [Spread(label, value, [e[k] for e in entries.values()], resolution=binomial_se(value, n_val),
                       same_seed=None if own is None else own[k])
                for k, label, value in ((1, "validation at the end", at_end), (2, "after precise BN", precise))]

    def judge_trained(self, recomputed, n_train: int, n_val: int) -> Table | None:
        """Judge every evaluated epoch, and the end, of each run in `compared` by the committed seeds, adding them
        quietly to `recomputed` (a helpers.workbook.spread.Recomputed); returns one summary row per run, or None
        when no run was compared."""
        if not self.compared:
            return None
        summary = []
        for name in self.compared:
            rows, at_end, precise = self.trained[name]
            judged = [self.spreads(name, row, n_train, n_val) for row in rows] + [self.end_spreads(name, at_end, precise, n_val)]
            for label, spreads in zip([f"{name}, epoch {row[0]:.0f}" for row in rows] + [f"{name}, end"], judged):
                recomputed.add(label, spreads, show=False)
            summary.append([name, len(judged), f"{sum(s.within for v in judged for s in v)} of {sum(len(v) for v in judged)}"])
        return Table(["run trained now", "its rows", "quantities within the committed seeds' spread"], summary,
                     title="Long runs trained here, each row judged by the committed seeds")

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

    def judge_and_save(self, recomputed, n_train: int, n_val: int, build: Path) -> str:
        """After every run: judge the runs trained here (judge_trained, its table shown when there is one), write
        them as table rows under `build` (rows_path) unless the mode is "committed", and return the names of the
        rows compared, for the finding long_run_rows_compared."""
        judged = self.judge_trained(recomputed, n_train, n_val)
        if judged is not None:
            from IPython.display import display
            display(judged)
        if self.mode != "committed":
            print("the runs trained here, as table rows:", self.save(rows_path(build, int(self.settings["seed"]))))
        return ", ".join(sorted(self.compared) or list(recomputed.rows))

    def creep_samples(self, runs: dict, clean, labels: dict, seed: int) -> tuple[dict, dict]:
        """(samples, over): creep_summary of each committed seed's noisy runs and clean run, plus this notebook's runs
        (`runs` {name: (rows, at end, after precise BN)}, `clean` rows) as one more sample when they were trained
        here. `over` holds the committed seeds only, or this run when the table has none: the means are over it."""
        table_seeds = sorted(self.seeds_entries("noisy_labels"))
        samples = {f"seed {s}": creep_summary({n: self.seeds_entries(n)[s] for n in labels},
                                              self.seeds_entries("plain")[s][0], labels) for s in table_seeds}
        over = dict(samples) or {f"seed {seed}": creep_summary(runs, clean, labels)}
        if "noisy_labels" in self.trained:
            samples[f"seed {seed}, trained now"] = creep_summary(runs, clean, labels)
        return samples, over


def gap_creep(noisy, plain) -> tuple[int, float, float, float]:
    """How the noisy BN run's reported gap creeps. noisy, plain: rows (n, 6) of the noisy and the clean run, the same
    evaluated epochs. Returns (index of the warm-up's end: the first evaluated epoch whose BN mode mismatch is within
    5 points, the reported gap's growth from there to the last epoch, the clean run's growth over the same epochs,
    the largest later |BN mode mismatch|)."""
    warmed = np.abs(noisy[:, 2]) <= 0.05
    warm = int(np.argmax(warmed)) if warmed.any() else len(noisy) - 1
    return (warm, float(noisy[-1, 4] - noisy[warm, 4]), float(plain[-1, 4] - plain[warm, 4]),
            float(np.max(np.abs(noisy[warm + 1:, 2]), initial=0)))


def creep_summary(runs: dict, clean, labels: dict) -> dict:
    """One sample (one seed's noisy runs {name: (rows, validation at end, after precise BN)} and its clean run's rows):
    the quantities lesson 04's claims about the creeping gap read. labels: {run name: its label}, "noisy_labels"
    (BN), "noisy_groupnorm", "noisy_nonorm" and "noisy_regularized" among them."""
    bn, at_end, precise = runs["noisy_labels"]
    warm, _, clean_growth, mode_after = gap_creep(bn, clean)
    return {**{f"growth, {labels[n]}": float(r[-1, 4] - r[warm, 4]) for n, (r, *_) in runs.items()},
            "growth, BN, clean labels": clean_growth, "BN: largest |mode mismatch| after warm-up": mode_after,
            "BN: overfitting ÷ reported gap, at the end": bn[-1, 3] / bn[-1, 4],
            "no normalization: fit accuracy at the end": runs["noisy_nonorm"][0][-1, 1],
            "final gap, BN − (BN + dropout + L2)": bn[-1, 4] - runs["noisy_regularized"][0][-1, 4],
            "precise BN at the end: validation gain (BN)": precise - at_end, "… ÷ final gap": (precise - at_end) / bn[-1, 4]}


def creep_table(samples: dict, over: dict, *, title: str) -> Table:
    """One row per creep_summary quantity, one column per sample, and a last column: mean ± sd over `over`."""
    from ..workbook.spread import spread_summary
    names = list(next(iter(over.values())))
    return Table(["noisy labels"] + list(samples) + [f"over {len(over)} seeds"],
                 [[n] + [v[n] for v in samples.values()] + [spread_summary(v[n] for v in over.values())] for n in names],
                 title=title, digits=3)


def noisy_runs_table(runs: dict, labels: dict, warm: int, *, title: str) -> Table:
    """This seed's noisy runs {name: (rows, at end, after precise BN)}: the reported gap at the warm-up's end (row
    index `warm`) and at the last epoch, its growth, and the end's BN mode mismatch, fit and validation accuracy."""
    first = next(iter(runs.values()))[0]
    return Table(["noisy labels, this seed", f"gap at epoch {first[warm, 0]:.0f}", f"… at {first[-1, 0]:.0f}", "growth",
                  "BN mode mismatch at the end", "fit accuracy at the end", "validation at the end", "… after precise BN"],
                 [[labels[n], r[warm, 4], r[-1, 4], float(r[-1, 4] - r[warm, 4]), r[-1, 2], r[-1, 1], at_end, precise]
                  for n, (r, at_end, precise) in runs.items()], title=title)


def plot_creep(runs: dict, labels: dict, clean, warm: int, *, finding: str) -> None:
    """The reported gap over the epochs of each noisy run {name: (rows, ...)} (legend: labels[name]) and of the clean
    run's rows (dotted), with a grey line at the end of the BN run's ("noisy_labels") warm-up, its row index `warm`."""
    from ..running_stats import plot_lines
    first = runs["noisy_labels"][0]
    plot_lines({**{labels[n]: (r[:, 0], r[:, 4]) for n, (r, *_) in runs.items()}, "BN, clean labels": (clean[:, 0], clean[:, 4], "k:")},
               vline=first[warm, 0], width=8, finding=finding, xlabel="epoch (grey line: end of the BN run's warm-up)",
               ylabel="reported gap, fit − validation")


def rows_path(build: Path, seed: int) -> Path:
    """Where a notebook run in mode "live" or "regenerate" writes the runs it trained."""
    return Path(build) / "long_runs" / f"seed-{seed}.csv"


def regenerate_long_runs(seeds: list[int], out: str | Path = TABLE, command: str = "") -> Path:
    """Execute notebook 04 once per seed with long_runs="regenerate" and collect its rows into `out`,
    with <out>.provenance.json. The other parameters are the notebook's defaults."""
    from tqdm.auto import tqdm
    from ..workbook.notebooks import execute, notebook_path
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
    parser = argparse.ArgumentParser(prog="python -m helpers.results.long_runs",
                                     description="Regenerate data/long_runs.csv (lesson 04's long runs) with provenance.")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", default=str(TABLE),
                        help="the CSV to write (default data/long_runs.csv)")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    command = "python -m helpers.results.long_runs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    path = regenerate_long_runs(seeds, args.out, command.strip())
    print(f"wrote {path} and {committed.provenance_path(path).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
