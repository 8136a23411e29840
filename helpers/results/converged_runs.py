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
    python -m helpers.results.converged_runs [--seeds 0,...,9] [--out data/converged_05.csv]
                                       regenerate the table, with provenance
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
    return distributed.train_for_accuracy(replicas=1, weights=distributed.initial_weights("mlp", seed=seed), x=x, y=data.y_train,
                                   x_test=x_test, y_test=data.y_test, per_replica_batch=k * settings["per_replica_batch"],
                                   epochs=settings["epochs"], base_learning_rate=settings["base_learning_rate"],
                                   lr_scale=scale, warmup_epochs=warmup * settings["warmup_epochs"], seed=seed,
                                   decay_epochs=settings["decay_epochs"], decay_factor=settings["decay_factor"])


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
