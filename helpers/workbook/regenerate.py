"""One command for every committed table: `python -m helpers.workbook.regenerate TABLE [TABLE ...]`.

    python -m helpers.workbook.regenerate --list               the tables, what each writes, its own command
    python -m helpers.workbook.regenerate tiny                 one table
    python -m helpers.workbook.regenerate tiny -- --seeds 0,1  one table, the rest passed to its own command
    python -m helpers.workbook.regenerate all                  every table, in `make data`'s order

Each table keeps its own command (the one its provenance records and its notebook cites); this module
only names them in one place and runs them in order: the spike runs from the first step read the spike
runs written before them. A table's command writes its data and its provenance only when it finishes.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

# name: (module, its command-line function, arguments, what it writes)
TABLES = {
    "examples": ("helpers.examples", "main", [], "data/examples/: lesson 08's example model and data"),
    "mnist1d": ("helpers.results.small_batch_runs", "_main", [], "data/mnist1d_runs.csv: lesson 02's MNIST-1D runs"),
    "tiny": ("helpers.results.small_batch_runs", "_main", ["tiny"],
             "data/tiny_batch_runs.csv: lesson 02's all-convolutional and headline runs"),
    "inference": ("helpers.results.mnist1d_inference", "_main", [], "data/mnist1d_inference_03.csv: lesson 03's batch-1 comparison"),
    "long_runs": ("helpers.results.long_runs", "main", [], "data/long_runs.csv: lesson 04's long runs"),
    "converged": ("helpers.results.converged_runs", "_main", [], "data/converged_05.csv: lesson 05's runs to convergence"),
    "spike_runs": ("helpers.spikes.asker_state", "main", [],
                   "data/spike_runs/: lesson 07's per-step logs and snapshots in the asker's regime"),
    "spike_runs_from_scratch": ("helpers.spikes.asker_state", "main", ["--from-scratch"],
                                "data/spike_runs/from_scratch/: lesson 07's remedies from the first step (reads spike_runs)"),
    "spike_runs_lstm64": ("helpers.spikes.asker_state", "main",
                          ["--from-scratch", "--units", "64", "--seeds", "0,1", "--remedies", "none,windows_centred,clip"],
                          "data/spike_runs/from_scratch_lstm64/: lesson 07's check against 2 × LSTM(64)"),
}


def command(name: str) -> str:
    """The table's own command line, as its provenance records it."""
    module, _, args, _ = TABLES[name]
    return " ".join(["python -m", module, *args])


def _function(name: str):
    module, function, _, _ = TABLES[name]
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(prog="python -m helpers.workbook.regenerate",
                                     description="Regenerate committed tables with their provenance.")
    parser.add_argument("tables", nargs="*", help="table names (--list shows them), or all")
    parser.add_argument("--list", action="store_true", help="list the tables and their commands")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, _, _, writes) in TABLES.items():
            print(f"{name:24s} {writes}\n{'':24s} {command(name)}")
        return 0
    names = list(TABLES) if args.tables == ["all"] else args.tables
    unknown = [n for n in names if n not in TABLES]
    if not names or unknown:
        parser.error((f"unknown table {unknown[0]!r}; " if unknown else "name a table; ")
                     + f"expected all or some of: {', '.join(TABLES)}")
    if extra and len(names) != 1:
        parser.error("arguments after -- go to one table's command: name exactly one table")
    for name in names:
        _, _, table_args, _ = TABLES[name]
        print(f"== {name}: {command(name)} {' '.join(extra)}".rstrip(), flush=True)
        t0 = time.time()
        rc = _function(name)([*table_args, *extra])
        if rc:
            print(f"{name} failed (exit {rc}); the tables after it were not regenerated", file=sys.stderr)
            return rc
        print(f"== {name}: done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
