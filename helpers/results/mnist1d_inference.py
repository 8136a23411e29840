"""Lesson 03's committed MNIST-1D table (data/mnist1d_inference_03.csv).

Lesson 03, section 4: the batch-1 comparison repeated on MNIST-1D (helpers.mnist1d), whose label lives in
the signal's shape, not its level. Trained to convergence that is too slow for the notebook's default run
for several seeds and models, so the runs are committed as data/mnist1d_inference_03.csv; the notebook
retrains its own seed's row live and judges it by the committed seeds' spread (helpers.workbook.spread).

    MNIST1D_SETTINGS, MNIST1D_RUNS, MNIST1D_SEEDS      what the table holds
    train_mnist1d(run, seed, data)        (model, seconds): one run trained at batch 256 to convergence
    batch1_accuracies(model, x, y)         the four ways of calling a trained model (section 4's code)
    inference_row(run, seed, data)         one row of the table, trained now
    read_mnist1d_table(path)               {(seed, run): row}
    mnist1d_spreads(row, table, seed)      a retrained row judged by the committed seeds
    python -m helpers.results.mnist1d_inference [--seeds 0,1,2,3,4] [--out data/mnist1d_inference_03.csv]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..workbook.frameworks import keras  # first: sets TensorFlow's environment
from ..bn_inference import batch1_accuracies
from ..models import conv1d_bn_model
from ..training import accuracy

MNIST1D_TABLE = "mnist1d_inference_03.csv"
#: Keras's default BN momentum; 16 steps per epoch at batch 256, 60 epochs = 960 steps: the moving averages
#: keep 0.99**960 ≈ 0.01 % of their starting values, and the test accuracy is flat over the last third
MNIST1D_SETTINGS = {"batch_size": 256, "epochs": 60, "momentum": 0.99, "learning_rate": 3e-3,
                    "filters": (32, 32, 32), "kernel_size": 5, "dense": 32}
#: run -> the model's normalization (conv1d_bn_model's `norm`)
MNIST1D_RUNS = {"bn": "batch", "no_norm": "none", "instance_norm": "instance"}
MNIST1D_SEEDS = (0, 1, 2, 3, 4)
#: the accuracies of a row; the three batch-1 readings exist only for the BN run
MNIST1D_ACCURACIES = ("acc_inference", "acc_training_batch1", "acc_instance_norm_batch1", "acc_two_thirds")
MNIST1D_COLUMNS = ["seed", "run", "norm", "batch_size", "epochs", "steps", "momentum", "learning_rate",
                   "train_loss", *MNIST1D_ACCURACIES, "train_seconds"]


def train_mnist1d(run: str, seed: int, data, settings: dict = MNIST1D_SETTINGS, *, progress: bool = True):
    """Build conv1d_bn_model(norm=MNIST1D_RUNS[run]) for 10 classes from `seed` and fit it at
    settings["batch_size"] for settings["epochs"] epochs. data: helpers.mnist1d.load_mnist1d().

    Returns (model, info): info holds "train_loss" (last epoch), "steps", "seconds" and "acc_two_thirds"
    (inference-mode test accuracy after two thirds of the epochs: beside the final one, it shows the plateau)."""
    from ..training import train
    if run not in MNIST1D_RUNS:
        raise ValueError(f"run {run!r}: expected one of {list(MNIST1D_RUNS)}")
    keras.utils.set_random_seed(seed)
    model = conv1d_bn_model(data.x_train.shape[1], data.x_train.shape[2], filters=settings["filters"],
                            kernel_size=settings["kernel_size"], dense=settings["dense"],
                            momentum=settings["momentum"], learning_rate=settings["learning_rate"],
                            classes=int(np.max(data.y_train)) + 1, norm=MNIST1D_RUNS[run], name=f"mnist1d_{run}")
    half = 2 * settings["epochs"] // 3
    first = train(model, data.x_train, data.y_train, epochs=half, batch_size=settings["batch_size"],
                  desc=f"MNIST-1D {run}, epochs 1–{half}", progress=progress)
    acc_two_thirds = accuracy(model, data.x_test, data.y_test)
    second = train(model, data.x_train, data.y_train, epochs=settings["epochs"] - half,
                   batch_size=settings["batch_size"], desc=f"MNIST-1D {run}, epochs {half + 1}–{settings['epochs']}",
                   progress=progress)
    steps = -(-len(data.x_train) // settings["batch_size"]) * settings["epochs"]
    return model, {"train_loss": second.metrics["loss"][-1], "steps": steps,
                   "seconds": first.seconds + second.seconds, "acc_two_thirds": acc_two_thirds}


def inference_row(run: str, seed: int, data, settings: dict = MNIST1D_SETTINGS, *, progress: bool = True) -> dict:
    """One row of the table (MNIST1D_COLUMNS), trained now; accuracies a row does not have are ''."""
    model, info = train_mnist1d(run, seed, data, settings, progress=progress)
    acc = batch1_accuracies(model, data.x_test, data.y_test)
    row = {"seed": seed, "run": run, "norm": MNIST1D_RUNS[run], "batch_size": settings["batch_size"],
           "epochs": settings["epochs"], "steps": info["steps"], "momentum": settings["momentum"],
           "learning_rate": settings["learning_rate"], "train_loss": round(info["train_loss"], 6),
           "acc_two_thirds": round(info["acc_two_thirds"], 6), "train_seconds": round(info["seconds"], 1)}
    row.update({k: round(acc[k], 6) if k in acc else "" for k in MNIST1D_ACCURACIES if k != "acc_two_thirds"})
    return row


def mnist1d_table_path():
    from ..workbook import committed
    return committed.find_data_dir() / MNIST1D_TABLE


def read_mnist1d_table(path=None) -> dict:
    """{(seed, run): row} of the committed table (numbers parsed; '' where a run has no such accuracy)."""
    from ..workbook import committed
    return {(int(r["seed"]), r["run"]): r
            for r in committed.read_csv_rows(path or mnist1d_table_path(), keep_text=("run", "norm"))}


def mnist1d_column(table: dict, run: str, name: str) -> dict:
    """{seed: value} of one accuracy of `run` over the committed seeds."""
    return {seed: float(row[name]) for (seed, r), row in sorted(table.items()) if r == run and row[name] != ""}


def mnist1d_spreads(row: dict, table: dict, seed: int, n_test: int):
    """A row retrained now, each of its accuracies judged by the same run's committed seeds: their range
    widened by 3 × max(binomial standard error on n_test signals, the seeds' sd)."""
    from ..workbook.spread import Spread, binomial_se
    out = []
    for name in MNIST1D_ACCURACIES:
        if row.get(name, "") == "":
            continue
        seeds = mnist1d_column(table, row["run"], name)
        live = float(row[name])
        out.append(Spread(f"{row['run']}: {name}", live, list(seeds.values()), resolution=binomial_se(live, n_test),
                          same_seed=seeds.get(seed)))
    return out


def regenerate_inference_table(out=None, seeds: Sequence[int] = MNIST1D_SEEDS, command: str = "", *,
                       settings: dict = MNIST1D_SETTINGS, data=None) -> list[dict]:
    """Train every run of the table for `seeds`; write the CSV (replacing `out` only once every row is
    written) and its provenance file. Returns the rows. settings, data: MNIST1D_SETTINGS and
    load_mnist1d() unless given (a test passes smaller ones)."""
    from ..mnist1d import load_mnist1d
    from ..workbook import committed
    data = load_mnist1d() if data is None else data
    return committed.write_table(
        out or mnist1d_table_path(), MNIST1D_COLUMNS, [(s, r) for s in seeds for r in MNIST1D_RUNS],
        lambda unit: [inference_row(unit[1], unit[0], data, settings, progress=False)],
        command=command or "python -m helpers.results.mnist1d_inference", desc="MNIST-1D batch-1 table", seeds=list(seeds),
        settings={k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        runs=dict(MNIST1D_RUNS), data="data/mnist1d.npz (helpers.mnist1d.load_mnist1d: 4,000 train / 1,000 test)")


def _main(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.results.mnist1d_inference [--seeds 0,1,2,3,4] [--out data/mnist1d_inference_03.csv]`: regenerate
    lesson 03's MNIST-1D batch-1 comparison (see data/README.md)."""
    from ..workbook import committed
    return committed.regenerate_main(argv, prog="helpers.results.mnist1d_inference", description=_main.__doc__,
                                     default_seeds=MNIST1D_SEEDS, table_name=MNIST1D_TABLE,
                                     regenerate=regenerate_inference_table)


if __name__ == "__main__":
    raise SystemExit(_main())
