"""Lesson 05's runs to convergence as a committed table: data/converged_05.csv.

The 84 % vs 86 % question is decided at convergence: the MLP of lesson 05 trained for `epochs`
epochs with a learning rate counted in epochs (×0.1 at each of `decay_epochs`), one device against
2 and 4 replicas at the same learning rate and at the linearly scaled one (with and without
warm-up), over several seeds. That is too long for a notebook's default run, so the rows are
committed; the notebook retrains the headline runs of its own seed and judges them by the committed
seeds' spread (helpers.workbook.spread).

k replicas × b take the one-device step on k·b to float rounding (lesson 05, section 1, and a
live multi-epoch check on the page), so every run here trains on one device at the run's global
batch, with the data order and initial weights of its seed: `helpers.distributed.train_for_accuracy`
with replicas=1 and per_replica_batch = k·b, the function the notebook's section 3 runs on k replicas.

    SETTINGS, RUNS, LABELS, HEADLINE, SEEDS, RECORDED_EPOCHS    what the table holds
    train_run(run, seed, data)         one run's train_for_accuracy result (every epoch)
    table_rows(run, seed, result)      its rows of the table (the RECORDED_EPOCHS)
    read_converged_runs(path)                   {(seed, run): {epoch: row}}
    column(table, run, epoch, name)    {seed: value} of one quantity over the committed seeds
    run_spreads(run, result, table, seed, n_test)   a retrained run judged by the committed seeds
    seed_values, seed_standard_error, paired_gaps   the numbers the lesson reads off the table
    summary_table, plot_converged, paired_gaps_table, plot_epochs_and_steps, judge_retrained, judged_table
                                       what the lesson shows of them (tables, figures, the live seed's verdict)
    python -m helpers.results.converged_runs [--seeds 0,...,9] [--out data/converged_05.csv]
                                       regenerate the table, with provenance
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..workbook import committed
from ..workbook.spread import Spread, binomial_se

TABLE_NAME = "converged_05.csv"
#: the settings of every run: the notebook's defaults for the per-replica batch, the one-device rate and the
#: warm-up, trained for 200 epochs (the tutorial's runs were 154–256 epochs long) with the rate ×0.1 at
#: epochs 100 and 150, counted in epochs so it means the same on every replica count
SETTINGS = {"per_replica_batch": 32, "base_learning_rate": 0.05, "epochs": 200, "decay_epochs": (100, 150),
            "decay_factor": 0.1, "warmup_epochs": 1}
#: run -> (replicas k, learning-rate multiplier, warm-up epochs or 0)
RUNS = {"1dev": (1, 1, 0),
        "2rep": (2, 1, 0),
        "2rep_scaled_warmup": (2, 2, 1),
        "4rep": (4, 1, 0),
        "4rep_scaled_warmup": (4, 4, 1),
        "4rep_scaled": (4, 4, 0)}
LABELS = {"1dev": "1 device, lr η", "2rep": "2 replicas, lr η", "2rep_scaled_warmup": "2 replicas, lr 2η + warm-up",
          "4rep": "4 replicas, lr η", "4rep_scaled_warmup": "4 replicas, lr 4η + warm-up",
          "4rep_scaled": "4 replicas, lr 4η, no warm-up"}
#: the runs a notebook retrains live on its seed
HEADLINE = ("1dev", "2rep", "2rep_scaled_warmup")
SEEDS = tuple(range(10))
#: the miniature's epochs (section 3 of the lesson, its default `epochs`): the table's equal-epochs point, and twice
#: that its equal-steps point for 2 replicas
MINIATURE_EPOCHS = 5
#: the epochs written to the table: every epoch of the first ten (the miniature's 5 and its equal-steps 10),
#: then every tenth
RECORDED_EPOCHS = tuple(sorted({*range(1, 11), *range(20, SETTINGS["epochs"] + 1, 10)}))
COLUMNS = ["seed", "run", "replicas", "per_replica_batch", "global_batch", "peak_learning_rate", "warmup_epochs",
           "epochs", "epoch", "steps", "learning_rate", "train_loss", "test_accuracy"]


def table_path() -> Path:
    return committed.find_data_dir() / TABLE_NAME


def train_run(run: str, seed: int, data, settings: dict = SETTINGS) -> dict:
    """One run of the table, trained on one device at its global batch k·b: the result of
    helpers.distributed.train_for_accuracy (per-epoch "test_accuracy", "train_loss_by_epoch", "learning_rate",
    "steps"; "seconds"). data: helpers.data.load_digits()."""
    from .. import distributed
    if run not in RUNS:
        raise ValueError(f"run {run!r}: expected one of {list(RUNS)}")
    k, scale, warmup = RUNS[run]
    x, x_test = data.flat()
    return distributed.train_for_accuracy(
        replicas=1, weights=distributed.initial_weights("mlp", seed=seed), x=x, y=data.y_train, x_test=x_test,
        y_test=data.y_test, per_replica_batch=k * settings["per_replica_batch"], epochs=settings["epochs"],
        base_learning_rate=settings["base_learning_rate"], lr_scale=scale,
        warmup_epochs=warmup * settings["warmup_epochs"], seed=seed, decay_epochs=settings["decay_epochs"],
        decay_factor=settings["decay_factor"])


def table_rows(run: str, seed: int, result: dict, settings: dict = SETTINGS) -> list[dict]:
    """A trained run as rows of the table, one per recorded epoch (COLUMNS)."""
    k, scale, warmup = RUNS[run]
    return [{"seed": seed, "run": run, "replicas": k, "per_replica_batch": settings["per_replica_batch"],
             "global_batch": result["global_batch"], "peak_learning_rate": scale * settings["base_learning_rate"],
             "warmup_epochs": warmup * settings["warmup_epochs"], "epochs": settings["epochs"], "epoch": e,
             "steps": result["steps"][e - 1], "learning_rate": f"{result['learning_rate'][e - 1]:.6g}",
             "train_loss": f"{result['train_loss_by_epoch'][e - 1]:.6f}",
             "test_accuracy": f"{result['test_accuracy'][e - 1]:.6f}"}
            for e in RECORDED_EPOCHS if e <= settings["epochs"]]


def read_converged_runs(path: str | Path | None = None) -> dict:
    """{(seed, run): {epoch: row}} of the committed table."""
    out: dict = {}
    for r in committed.read_csv_rows(path or table_path(), keep_text=("run",)):
        out.setdefault((int(r["seed"]), r["run"]), {})[int(r["epoch"])] = r
    return out


def column(table: dict, run: str, epoch: int, name: str = "test_accuracy") -> dict:
    """{seed: value} of `name` at `epoch` of `run`, over the committed seeds."""
    return {seed: float(rows[epoch][name]) for (seed, r), rows in sorted(table.items()) if r == run and epoch in rows}


def run_spreads(run: str, result: dict, table: dict, seed: int, n_test: int,
                epochs: Sequence[int] = (5, SETTINGS["epochs"])) -> list[Spread]:
    """A retrained run judged by the committed seeds of the same run: its test accuracy at each of `epochs`
    against the seeds' range widened by 3 × max(binomial standard error on n_test digits, the seeds' sd)."""
    out = []
    for e in epochs:
        seeds = column(table, run, e)
        live = float(result["test_accuracy"][e - 1])
        out.append(Spread(f"{LABELS[run]}: test accuracy after epoch {e}", live, list(seeds.values()),
                          resolution=binomial_se(live, n_test), same_seed=seeds.get(seed)))
    return out


# --------------------------------------------------------------------------- what lesson 05 reads and shows


def seed_values(table: dict, run: str, epoch: int, name: str = "test_accuracy") -> np.ndarray:
    """`column` as an array (seeds,), in seed order: one quantity of one run at one epoch over the committed seeds."""
    return np.array(list(column(table, run, epoch, name).values()))


def seed_standard_error(values) -> float:
    """Standard error of a mean over seeds: sd (ddof=1) / √n of per-seed values, shape (n,)."""
    v = np.asarray(values)
    return float(v.std(ddof=1) / np.sqrt(len(v)))


def _seeds(table: dict) -> list[int]:
    return sorted({s for s, _ in table})


def summary_table(table: dict):
    """The committed runs at a glance (a Table): per run its global batch, its steps in all, its test accuracy after
    MINIATURE_EPOCHS, twice that and the last epoch, and its final training loss, as "mean ± sd (min–max)" over seeds."""
    from ..workbook.spread import spread_summary
    from ..workbook.tables import Table
    first, mini, end = _seeds(table)[0], MINIATURE_EPOCHS, SETTINGS["epochs"]
    rows = [[LABELS[n], table[first, n][end]["global_batch"], table[first, n][end]["steps"],
             spread_summary(seed_values(table, n, mini)), spread_summary(seed_values(table, n, 2 * mini)),
             spread_summary(seed_values(table, n, end)), spread_summary(seed_values(table, n, end, "train_loss"), digits=4)]
            for n in RUNS]
    return Table(["run", "global batch", "steps in all", f"test accuracy after epoch {mini}", f"after epoch {2 * mini}",
                  f"after epoch {end}", f"training loss after epoch {end}"], rows,
                 title=f"{len(_seeds(table))} seeds, committed (data/converged_05.csv): mean ± sd (min–max)")


def plot_converged(table: dict):
    """Every run of the table against epoch (log axes): test accuracy, mean ± sd over seeds (left), and the model's
    training loss, mean over seeds (right); dotted lines where the rate is cut. Returns (fig, (ax_acc, ax_loss))."""
    from ..workbook.plotting import figure
    end, epochs = SETTINGS["epochs"], np.array(RECORDED_EPOCHS)
    fig, (ax_a, ax_l) = figure(2, finding=f"After {end} epochs the fixed-rate 2 replicas end at "
                                          f"{seed_values(table, '2rep', end).mean():.1%}, 1 device at "
                                          f"{seed_values(table, '1dev', end).mean():.1%} ({len(_seeds(table))} seeds)")
    for n in RUNS:
        curve = np.array([seed_values(table, n, e) for e in epochs])           # (epochs, seeds)
        mean, sd = curve.mean(1), curve.std(1, ddof=1)
        line, = ax_a.plot(epochs, mean, label=LABELS[n])
        ax_a.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        ax_l.plot(epochs, np.array([seed_values(table, n, e, "train_loss") for e in epochs]).mean(1), color=line.get_color())
    for e in SETTINGS["decay_epochs"]:
        ax_a.axvline(e, color="gray", ls=":")
        ax_l.axvline(e, color="gray", ls=":")
    ax_a.set(xscale="log", ylim=(0.8, 1.0), xlabel="epoch", ylabel="test accuracy (mean ± sd over seeds)", title="test accuracy")
    ax_l.set(xscale="log", yscale="log", xlabel="epoch", ylabel="training loss of the model (mean over seeds)",
             title="training loss; dotted: rate × 0.1")
    ax_a.legend(fontsize=6)
    return fig, (ax_a, ax_l)


def _gap_specs() -> dict:
    """name -> (label, run a, epoch of a, run b, epoch of b): the differences a − b that paired_gaps computes."""
    mini, end, decay = MINIATURE_EPOCHS, SETTINGS["epochs"], SETTINGS["decay_epochs"][0]
    return {"equal_epochs": (f"1 device − 2 replicas at η, epoch {mini} (equal epochs)", "1dev", mini, "2rep", mini),
            "equal_steps": (f"1 device at epoch {mini} − 2 replicas at epoch {2 * mini} (equal steps)",
                            "1dev", mini, "2rep", 2 * mini),
            "converged": (f"1 device − 2 replicas at η, epoch {end} (equal epochs, converged)", "1dev", end, "2rep", end),
            "converged_scaled": (f"1 device − 2 replicas at 2η + warm-up, epoch {end}", "1dev", end, "2rep_scaled_warmup", end),
            "warmup_mini": (f"4 replicas at 4η: with − without warm-up, epoch {mini}",
                            "4rep_scaled_warmup", mini, "4rep_scaled", mini),
            "warmup_end": (f"4 replicas at 4η: with − without warm-up, epoch {end}", "4rep_scaled_warmup", end, "4rep_scaled", end),
            "plateau": (f"1 device: epoch {end} − epoch {decay} (before the first decay)", "1dev", end, "1dev", decay)}


def paired_gaps(table: dict) -> dict[str, np.ndarray]:
    """Differences of test accuracy paired by seed (same initial weights and data order, so the seeds' spread
    largely cancels), each shape (seeds,): equal_epochs (1dev − 2rep after MINIATURE_EPOCHS), equal_steps (1dev
    after MINIATURE_EPOCHS − 2rep after twice that), converged and converged_scaled (1dev − 2rep, 1dev −
    2rep_scaled_warmup at the last epoch), warmup_mini and warmup_end (4rep_scaled_warmup − 4rep_scaled), plateau
    (1dev at the last epoch − at the first decay)."""
    return {name: seed_values(table, a, ea) - seed_values(table, b, eb) for name, (_, a, ea, b, eb) in _gap_specs().items()}


def paired_gaps_table(gaps: dict, n_test: int):
    """paired_gaps as a Table: mean, sd over seeds, standard error of the mean, and the mean in test digits."""
    from ..workbook.tables import Table
    labels = {name: spec[0] for name, spec in _gap_specs().items()}
    return Table(["difference, paired by seed", "mean", "sd over seeds", "standard error of the mean", "in test digits (mean)"],
                 [[labels[n], float(v.mean()), float(v.std(ddof=1)), seed_standard_error(v), float(v.mean()) * n_test]
                  for n, v in gaps.items()])


def plot_epochs_and_steps(runs: dict, finding: str):
    """Section 3's runs ({name: helpers.distributed.train_for_accuracy result}): test accuracy per epoch (left) and
    per optimizer step (right), one line each; `finding` is the title. Returns (fig, (ax_epoch, ax_step))."""
    from ..workbook.plotting import figure
    fig, (ax_e, ax_s) = figure(2, finding=finding)
    for name, r in runs.items():
        ax_e.plot(np.arange(1, len(r["test_accuracy"]) + 1), r["test_accuracy"], marker="o", label=name)
        ax_s.plot(r["steps"], r["test_accuracy"], marker="o", label=name)
    ax_e.set(xlabel="epoch", ylabel="test accuracy (fraction)", title="per epoch: more replicas fall behind")
    ax_s.set(xlabel="optimizer steps", ylabel="test accuracy (fraction)", title="per step: fewer steps, not worse steps")
    ax_s.legend(fontsize=7)
    return fig, (ax_e, ax_s)


def at_table_settings(settings: dict) -> bool:
    """Whether a notebook's runs (per_replica_batch, base_learning_rate, warmup_epochs, epochs) are the table's at
    one of its recorded epochs before the first decay, so that the table's runs may judge them."""
    return (settings["per_replica_batch"] == SETTINGS["per_replica_batch"]
            and abs(settings["base_learning_rate"] - SETTINGS["base_learning_rate"]) < 1e-12
            and settings["warmup_epochs"] == SETTINGS["warmup_epochs"]
            and settings["epochs"] in RECORDED_EPOCHS and settings["epochs"] < SETTINGS["decay_epochs"][0])


def judge_retrained(live: dict, table: dict, seed: int, n_test: int, *, section3: dict | None = None,
                    section3_settings: dict | None = None, record=None):
    """Judge runs retrained now by the committed seeds' spread; returns a helpers.workbook.spread.Recomputed (which
    records committed_rows_recomputed and committed_rows_within_spread).

    live: {run: train_run result}, judged after epoch 5 and the last. section3: {run of the table: result} of the
    notebook's own multi-replica runs, judged at their last epoch when section3_settings are at_table_settings
    (else a line says they are not judged). record: where the totals go (default: the notebook's findings)."""
    from ..workbook.spread import Recomputed
    recomputed = Recomputed(record=record)
    for n, r in live.items():
        recomputed.add(LABELS[n], run_spreads(n, r, table, seed, n_test), show=False)
    if section3 and section3_settings and at_table_settings(section3_settings):
        for n, r in section3.items():
            recomputed.add(f"section 3: {LABELS[n]}", run_spreads(n, r, table, seed, n_test,
                                                                  epochs=(section3_settings["epochs"],)), show=False)
    elif section3:
        print(f"section 3 ran at other settings than the table ({', '.join(f'{k} {SETTINGS[k]}' for k in section3_settings)}, "
              f"an epoch count it records before epoch {SETTINGS['decay_epochs'][0]}): its runs are not judged")
    return recomputed


def judged_table(recomputed, seed: int, n_seeds: int):
    """Every row of a Recomputed (judge_retrained) as one Table."""
    from ..workbook.spread import COLUMNS as SPREAD_COLUMNS
    from ..workbook.tables import Table
    return Table(SPREAD_COLUMNS, [s.row() for spreads in recomputed.rows.values() for s in spreads], digits=4,
                 title=f"seed {seed}, recomputed now, judged by the {n_seeds} committed seeds' spread")


def regenerate_converged_runs(out: str | Path | None = None, seeds: Sequence[int] = SEEDS, command: str = "") -> list[dict]:
    """Train every run of the table for `seeds`; write the CSV (replacing `out` only once every row is written)
    and its provenance file. Returns the rows."""
    from ..data import load_digits
    data, seconds = load_digits(), {}

    def rows_of(unit):
        seed, run = unit
        result = train_run(run, seed, data)
        seconds[f"{seed}/{run}"] = round(result["seconds"], 1)
        return table_rows(run, seed, result)

    return committed.write_table(
        out or table_path(), COLUMNS, [(s, r) for s in seeds for r in RUNS], rows_of,
        command=command or "python -m helpers.results.converged_runs", desc="converged runs", seeds=list(seeds),
        settings={k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
        runs={r: list(v) for r, v in RUNS.items()}, trained_as="one device at the run's global batch (replicas × b)",
        train_seconds=seconds)


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.results.converged_runs [--seeds 0,...,9] [--out data/converged_05.csv]`: regenerate lesson 05's
    table of runs to convergence (see data/README.md)."""
    return committed.regenerate_main(argv, prog="helpers.results.converged_runs", description=_main.__doc__, default_seeds=SEEDS,
                                     table_name=TABLE_NAME, regenerate=regenerate_converged_runs)


if __name__ == "__main__":
    raise SystemExit(_main())
