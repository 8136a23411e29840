"""Lesson 02's committed tables: the MNIST-1D runs and the tiny-batch runs (data/README.md).

    committed_mnist1d_rows / _seeds      the MNIST-1D runs in data/mnist1d_runs.csv (one seed / all)
    sweep_row_spreads                    a retrained row judged by the committed seeds' spread
    mnist1d_results                      section 5's four MNIST-1D rows: committed, and the ones trained now judged
    committed_tiny_seeds / tiny_settings the all-conv variant and the headline rows over seeds in
    headline_rows / allconv_table        data/tiny_batch_runs.csv; tiny_sweep trains one of its rows again
    page_builder                         the page's model builder, from the module generated from lesson 02

`python -m helpers.results.small_batch_runs` regenerates the MNIST-1D table (regenerate_mnist1d) and
`python -m helpers.results.small_batch_runs tiny` the tiny-batch table (regenerate_tiny); both train the
page's own builder with helpers.small_batches.Sweep. Importing this module loads TensorFlow and does nothing else.
"""
from __future__ import annotations

from typing import Sequence

from ..small_batches import RunResult, Sweep
from ..workbook.tables import Table

# ------------------------------------------- MNIST-1D runs: the committed table

MNIST1D_TABLE = "mnist1d_runs.csv"          # under data/ (helpers.workbook.committed.DATA_DIR)
MNIST1D_COLUMNS = ["seed", "mnist1d_epochs", "learning_rate", "norm", "batch_size", "epochs", "steps",
                   "acc", "acc_precise", "train_seconds"]
MNIST1D_SEEDS = (0, 1, 2, 3, 4, 5)
# the notebook's defaults: the table holds these settings only; any other setting trains every row live
MNIST1D_DEFAULTS = {"mnist1d_epochs": 2, "learning_rate": 0.001}


def mnist1d_settings(mnist1d_epochs: int) -> list[tuple[str, int, int]]:
    """(norm, batch size, epochs) of lesson 02's MNIST-1D rows: BN, dense LayerNorm and GroupNorm at i.i.d.
    batch 2 for `mnist1d_epochs`, and BN at batch 32 with as many steps (16x the epochs)."""
    return [("batch", 2, mnist1d_epochs), ("dense_ln", 2, mnist1d_epochs), ("group", 2, mnist1d_epochs),
            ("batch", 32, 16 * mnist1d_epochs)]


def mnist1d_row(res: RunResult, seed: int, mnist1d_epochs: int) -> dict:
    """One RunResult as a row of the committed table (MNIST1D_COLUMNS)."""
    return {"seed": seed, "mnist1d_epochs": mnist1d_epochs, "learning_rate": res.learning_rate, "norm": res.norm,
            "batch_size": res.batch_size, "epochs": res.epochs, "steps": res.steps, "acc": res.acc,
            "acc_precise": "" if res.acc_precise is None else res.acc_precise,
            "train_seconds": round(res.train_seconds, 2)}


def result_from_row(row: dict) -> RunResult:
    """A committed row as the RunResult the notebook's tables and checks read (scored in inference mode only)."""
    return RunResult(row["norm"], "iid", int(row["batch_size"]), int(row["epochs"]), float(row["learning_rate"]),
                     int(row["steps"]), float(row["train_seconds"]), float(row["acc"]), None,
                     None if row["acc_precise"] == "" else float(row["acc_precise"]))


def committed_mnist1d_rows(seed: int, mnist1d_epochs: int, learning_rate: float, path=None) -> dict:
    """{(norm, batch size): row} of the committed table for this seed and setting; {} when it is not tabulated."""
    return {k: rows[seed] for k, rows in committed_mnist1d_seeds(mnist1d_epochs, learning_rate, path).items()
            if seed in rows}


def committed_mnist1d_seeds(mnist1d_epochs: int, learning_rate: float, path=None) -> dict:
    """{(norm, batch size): {seed: row}} of every committed seed for this setting; {} when it is not tabulated."""
    from ..workbook.committed import DATA_DIR, read_csv_rows
    rows = read_csv_rows(path or DATA_DIR / MNIST1D_TABLE, keep_text=("norm",))
    out: dict = {}
    for r in rows:
        if int(r["mnist1d_epochs"]) == mnist1d_epochs and abs(float(r["learning_rate"]) - learning_rate) <= 1e-12:
            out.setdefault((r["norm"], int(r["batch_size"])), {})[int(r["seed"])] = r
    return out


def sweep_row_spreads(live: RunResult, rows_by_seed: dict, seed: int, n_test: int) -> list:
    """A recomputed MNIST-1D run judged by the committed seeds of its setting (helpers.workbook.spread): its test
    accuracy and, where the model has BN, its precise-BN accuracy, each against the seeds' range widened by
    3 × max(binomial standard error on n_test signals, the seeds' sd). A run of another length is not comparable."""
    from ..workbook.spread import Spread, binomial_se
    steps = {(int(r["steps"]), int(r["epochs"])) for r in rows_by_seed.values()}
    if steps != {(live.steps, live.epochs)}:
        raise ValueError(f"{live.norm} b={live.batch_size}: {live.steps} steps × {live.epochs} epochs, the committed "
                         f"rows have {sorted(steps)}: not the same run")
    own = rows_by_seed.get(seed)
    out = [Spread("test accuracy", live.acc, [r["acc"] for r in rows_by_seed.values()],
                  resolution=binomial_se(live.acc, n_test), same_seed=None if own is None else own["acc"])]
    if live.acc_precise is not None:
        out.append(Spread("after precise BN", live.acc_precise, [r["acc_precise"] for r in rows_by_seed.values()],
                          resolution=binomial_se(live.acc_precise, n_test),
                          same_seed=None if own is None else own["acc_precise"]))
    return out


# ------------------------------- the tiny-batch table: all-conv variant and headline rows over seeds

TINY_TABLE = "tiny_batch_runs.csv"           # under data/
TINY_COLUMNS = ["seed", "dataset", "run_epochs", "learning_rate", "norm", "batch_size", "epochs", "steps",
                "acc", "acc_precise", "train_seconds"]
TINY_SEEDS = (0, 1, 2, 3, 4)
TINY_DEFAULTS = {"run_epochs": 2, "learning_rate": 0.001}    # epochs of the batch-2 runs, on both data sets
DATASETS = ("digits", "mnist1d")


def tiny_settings(dataset: str, run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> list[tuple[str, int, int]]:
    """(norm, batch size, epochs) of the tiny-batch table for one data set: the all-conv model (no dense layer)
    with BN at batch 2, 4 and 32 for `run_epochs`, BN at 32 with batch 2's steps (16x the epochs) and GroupNorm at 2;
    on the digits also section 4's CNN at batch 2 with BN, dense LayerNorm, GroupNorm and LayerNorm (the headline;
    MNIST-1D's are in data/mnist1d_runs.csv)."""
    e = run_epochs
    rows = [("allconv_batch", 2, e), ("allconv_batch", 4, e), ("allconv_batch", 32, e), ("allconv_batch", 32, 16 * e),
            ("allconv_group", 2, e)]
    if dataset == "digits":
        rows += [("batch", 2, e), ("dense_ln", 2, e), ("group", 2, e), ("layer", 2, e)]
    return rows


def tiny_dataset(name: str):
    """The data set of the tiny-batch table by name: helpers.data.load_digits or helpers.mnist1d.load_mnist1d."""
    if name == "digits":
        from ..data import load_digits
        return load_digits()
    if name == "mnist1d":
        from ..mnist1d import load_mnist1d
        return load_mnist1d()
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")


def tiny_sweep(build, dataset: str, seed: int, run_epochs: int = TINY_DEFAULTS["run_epochs"],
               learning_rate: float = TINY_DEFAULTS["learning_rate"], data=None) -> Sweep:
    """The Sweep that trains the tiny-batch table's rows of `dataset` with the page's `build(norm, seed, input_shape)`."""
    data = data or tiny_dataset(dataset)
    return Sweep(data.x_train, data.y_train, data.x_test, data.y_test, epochs=run_epochs, learning_rate=learning_rate,
                 seed=seed, train_mode=False, build=lambda norm, s: build(norm, s, input_shape=data.x_train.shape[1:]))


def tiny_row(res: RunResult, seed: int, dataset: str, run_epochs: int) -> dict:
    """One RunResult as a row of the tiny-batch table (TINY_COLUMNS)."""
    return {"seed": seed, "dataset": dataset, "run_epochs": run_epochs, "learning_rate": res.learning_rate,
            "norm": res.norm, "batch_size": res.batch_size, "epochs": res.epochs, "steps": res.steps, "acc": res.acc,
            "acc_precise": "" if res.acc_precise is None else res.acc_precise,
            "train_seconds": round(res.train_seconds, 2)}


def committed_tiny_seeds(path=None) -> dict:
    """{(dataset, norm, batch size, epochs): {seed: row}} of the committed tiny-batch table."""
    from ..workbook.committed import DATA_DIR, read_csv_rows
    out: dict = {}
    for r in read_csv_rows(path or DATA_DIR / TINY_TABLE, keep_text=("dataset", "norm")):
        out.setdefault((r["dataset"], r["norm"], int(r["batch_size"]), int(r["epochs"])), {})[int(r["seed"])] = r
    return out


def regenerate_tiny(out=None, seeds: Sequence[int] = TINY_SEEDS, command: str = "") -> list[dict]:
    """Train every row of the tiny-batch table (the page's builder, TINY_DEFAULTS) on both data sets for `seeds`;
    write the CSV and its provenance file. Returns the rows."""
    from ..workbook.committed import DATA_DIR, write_table
    build = page_builder()
    data = {name: tiny_dataset(name) for name in DATASETS}
    epochs, lr = TINY_DEFAULTS["run_epochs"], TINY_DEFAULTS["learning_rate"]

    def rows_of(unit):
        seed, name = unit
        sweep = tiny_sweep(build, name, seed, epochs, lr, data=data[name])
        return [tiny_row(sweep.run(norm, "iid", b, epochs=e), seed, name, epochs)
                for norm, b, e in tiny_settings(name, epochs)]

    return write_table(out or DATA_DIR / TINY_TABLE, TINY_COLUMNS, [(s, n) for s in seeds for n in DATASETS], rows_of,
                       command=command or "python -m helpers.results.small_batch_runs tiny", desc="tiny-batch table",
                       seeds=list(seeds), **TINY_DEFAULTS)


def mnist1d_results(build, data, seed: int, mnist1d_epochs: int, learning_rate: float, mode: str = "committed",
                    recomputed=None, names: dict | None = None):
    """Lesson 02's four MNIST-1D rows (mnist1d_settings): the BN row at batch 2 trained now and the others read from
    the committed table, or all four trained now (mode "live", or a seed or setting the table lacks). Each row trained
    now that the table holds is one more sample: judged by the committed seeds' spread with recomputed.add.

    Returns (sweep, {(norm, batch): RunResult}, {(norm, batch): RunResult trained now}, {(norm, batch): {seed: row}}).
    """
    from tqdm.auto import tqdm
    sweep = mnist1d_sweep(build, data, seed, mnist1d_epochs, learning_rate)
    settings = mnist1d_settings(mnist1d_epochs)
    table = committed_mnist1d_seeds(mnist1d_epochs, learning_rate)
    own = {k: rows[seed] for k, rows in table.items() if seed in rows}
    todo = settings if mode == "live" or not own else settings[:1]
    live = {(n, b): sweep.run(n, "iid", b, epochs=e) for n, b, e in tqdm(todo, desc="MNIST-1D runs", unit="run")}
    results = {(n, b): live.get((n, b)) or result_from_row(own[(n, b)]) for n, b, _ in settings}
    for (n, b), r in live.items():
        if recomputed is not None and (n, b) in table:
            recomputed.add(f"MNIST-1D, {(names or {}).get(n, n)} at batch {b}, seed {seed}",
                           sweep_row_spreads(r, table[(n, b)], seed, len(data.y_test)))
    return sweep, results, live, table


def headline_rows(tiny: dict, mnist1d_table: dict, norms: Sequence[str] = ("batch", "dense_ln", "group", "layer"),
                  run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> dict:
    """{(data set label, norm): {seed: row}}: section 4's CNN at i.i.d. batch 2 with identical steps, from the tiny-batch
    table (digits) and the MNIST-1D table (the norms it holds)."""
    out = {("digits", n): tiny[("digits", n, 2, run_epochs)] for n in norms if ("digits", n, 2, run_epochs) in tiny}
    out.update({("MNIST-1D", n): mnist1d_table[(n, 2)] for n in norms if (n, 2) in mnist1d_table})
    return out


def allconv_table(tiny: dict, run_epochs: int = TINY_DEFAULTS["run_epochs"]) -> Table:
    """The all-conv rows of the tiny-batch table: per setting and data set, test accuracy and (BN) precise-BN
    accuracy as mean ± sd (min–max, seeds)."""
    from ..workbook.spread import spread_summary
    label = {"digits": "digits", "mnist1d": "MNIST-1D"}
    rows = []
    for norm, b, e in tiny_settings("mnist1d", run_epochs):
        row = ["BN" if norm == "allconv_batch" else "GroupNorm", b, e]
        for d in DATASETS:
            seeds = tiny[(d, norm, b, e)].values()
            row += [spread_summary(r["acc"] for r in seeds),
                    spread_summary(r["acc_precise"] for r in seeds) if norm == "allconv_batch" else ""]
        rows.append(row)
    seeds = min(len(v) for k, v in tiny.items() if k[1].startswith("allconv_"))
    return Table(["all-conv model, i.i.d.", "batch", "epochs"] + [f"{label[d]}: {q}" for d in DATASETS
                                                                  for q in ("test acc", "precise BN")],
                 rows, title=f"All-convolutional CNN over {seeds} committed seeds (mean ± sd, min–max)")


def page_builder():
    """build(norm, seed, input_shape) as lesson 02 writes it on the page (its cell tagged "lesson-code"),
    from the module generated from that cell (helpers/lessons/l02.py), so the committed table and the tests
    train the lesson's own model."""
    from ..lessons.l02 import build
    return build


def mnist1d_sweep(build, data, seed: int, mnist1d_epochs: int, learning_rate: float) -> Sweep:
    """The Sweep lesson 02 trains its MNIST-1D rows with: `build(norm, seed, input_shape)` is the page's builder."""
    return Sweep(data.x_train, data.y_train, data.x_test, data.y_test, epochs=mnist1d_epochs,
                 learning_rate=learning_rate, seed=seed, train_mode=False,
                 build=lambda norm, s: build(norm, s, input_shape=data.x_train.shape[1:]))


def regenerate_mnist1d(out=None, seeds: Sequence[int] = MNIST1D_SEEDS, command: str = "") -> list[dict]:
    """Train every row of the MNIST-1D table (the page's builder, the notebook's defaults) for `seeds`;
    write the CSV and its provenance file. Returns the rows."""
    from ..mnist1d import load_mnist1d
    from ..workbook.committed import DATA_DIR, write_table
    build, data = page_builder(), load_mnist1d()
    epochs, lr = MNIST1D_DEFAULTS["mnist1d_epochs"], MNIST1D_DEFAULTS["learning_rate"]

    def rows_of(seed):
        sweep = mnist1d_sweep(build, data, seed, epochs, lr)
        return [mnist1d_row(sweep.run(norm, "iid", b, epochs=e), seed, epochs) for norm, b, e in mnist1d_settings(epochs)]

    return write_table(out or DATA_DIR / MNIST1D_TABLE, MNIST1D_COLUMNS, seeds, rows_of,
                       command=command or "python -m helpers.results.small_batch_runs", desc="MNIST-1D table",
                       seeds=list(seeds), **MNIST1D_DEFAULTS)


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.results.small_batch_runs [--seeds 0,1,2] [--out data/mnist1d_runs.csv]`: regenerate lesson 02's
    MNIST-1D table; `python -m helpers.results.small_batch_runs tiny [--seeds ...] [--out data/tiny_batch_runs.csv]`: its
    tiny-batch table (all-conv variant and headline rows; see data/README.md)."""
    import sys
    from ..workbook.committed import regenerate_main
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tiny"]:
        return regenerate_main(argv[1:], prog="helpers.results.small_batch_runs tiny", description=_main.__doc__,
                               default_seeds=TINY_SEEDS, table_name=TINY_TABLE, regenerate=regenerate_tiny)
    return regenerate_main(argv, prog="helpers.results.small_batch_runs", description=_main.__doc__, default_seeds=MNIST1D_SEEDS,
                           table_name=MNIST1D_TABLE, regenerate=regenerate_mnist1d)


if __name__ == "__main__":
    raise SystemExit(_main())
