"""Overhead of helpers.training.train against a bare model.fit.

Same model (weights reset to the same starting point before every run), same
data, same epochs and batch size, in one process. Both paths are traced once
before timing; then the runs alternate (bare, helper, helper, bare, ...) so a
drift in machine load hits both alike. Reported: median seconds of each and
their ratio (helper / bare).

    python -m benchmarks.overhead --runs 5 --epochs 5   # prints one JSON line
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time


def alternating_order(runs: int) -> list[str]:
    """bare/helper pairs whose order flips each pair: ABBA ABBA ..."""
    order = []
    for r in range(runs):
        order += ["bare", "helper"] if r % 2 == 0 else ["helper", "bare"]
    return order


def training_overhead(runs: int = 5, epochs: int = 5, batch_size: int = 32, seed: int = 0) -> dict:
    """Time `runs` bare fits and `runs` train() calls of small_cnn on the digits."""
    from helpers.workbook.environment import quiet_tensorflow, seed_everything
    quiet_tensorflow()
    seed_everything(seed)
    from helpers.data import load_digits
    from helpers.models import compile_classifier, small_cnn
    from helpers.training import train

    digits = load_digits()
    x, y = digits.x_train, digits.y_train
    model = compile_classifier(small_cnn("batch"))
    start_weights = model.get_weights()

    def bare():
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)

    def helper():
        train(model, x, y, epochs=epochs, batch_size=batch_size, desc="overhead")

    paths = {"bare": bare, "helper": helper}
    seconds = {"bare": [], "helper": []}
    with contextlib.redirect_stderr(io.StringIO()):  # the helper's progress bar (it is part of the cost)
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # trace once, outside the timing
        train(model, x, y, epochs=1, batch_size=batch_size, desc="warm-up")
        for name in alternating_order(runs):
            model.set_weights(start_weights)
            t0 = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - t0)
    bare_s, helper_s = statistics.median(seconds["bare"]), statistics.median(seconds["helper"])
    return {"runs": runs, "epochs": epochs, "batch_size": batch_size, "samples": int(len(x)),
            "model": "small_cnn(norm='batch')", "bare_median_s": bare_s, "helper_median_s": helper_s,
            "ratio": helper_s / bare_s, "bare_s": [round(s, 4) for s in seconds["bare"]],
            "helper_s": [round(s, 4) for s in seconds["helper"]]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(json.dumps(training_overhead(args.runs, args.epochs, args.batch_size)))


if __name__ == "__main__":
    main()
