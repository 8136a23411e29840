"""Regenerate the committed tables of lesson 06, with provenance.

    python -m helpers.spikes.regenerate                 # both tables, the documented settings
    python -m helpers.spikes.regenerate spike_map --out build/spike_map.csv --seeds 20
    python -m helpers.spikes.regenerate remedies --out build/remedies.csv --seeds 6 --learning-rate 0.1

Each table gets <table>.provenance.json beside it: the command, library versions,
UTC start/finish, machine and CPU count. Rows are written as they finish, so an
interrupted run leaves a valid partial CSV (and no provenance file). The settings of
every row are helpers.spikes.SWEEP_DEFAULTS (see data/spike_map.md).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import committed
from .sweeps import remedy_row, remedy_runs, spike_map_cell

SPIKE_MAP_DEFAULTS = dict(out="data/spike_map.csv", seeds=10, learning_rates="0.001,0.03,0.1",
                          positive_weights="30,neg/pos")
REMEDY_DEFAULTS = dict(out="data/remedies.csv", seeds=6, learning_rate=0.1)
MAX_SEEDS = 50            # each seed is one ~210-step run per cell: 50 seeds × 6 cells stays within hours
MAX_LEARNING_RATES = 6


def _parse_weights(text: str) -> list:
    return [w if w == "neg/pos" else float(w) for w in text.split(",")]


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def regenerate_spike_map(out: str | Path, seeds: int, learning_rates: str, positive_weights: str,
                         first_seed: int = 0, command: str = "") -> Path:
    """The spike map: one row per (seed, learning rate, weight), seeds outermost (a partial map has
    every cell). Returns the CSV path."""
    _quiet_tf()
    started = committed.utc_now()
    out = Path(out)
    committed.start_table(out, committed.SPIKE_MAP_COLUMNS)
    lrs = [float(v) for v in learning_rates.split(",")]
    n = 0
    for seed in range(first_seed, first_seed + seeds):
        for lr in lrs:
            for w in _parse_weights(positive_weights):
                row = spike_map_cell(lr, w, [seed])[0]
                committed.append_rows(out, committed.SPIKE_MAP_COLUMNS, [row])
                n += 1
                print(f"spike_map lr={lr:g} w={w} seed={seed}: spiked={row['spiked']} "
                      f"ratio={row['max_monitored_ratio']:.2f} pr_auc={row['pr_auc']:.3f}", flush=True)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=n))
    return out


def regenerate_remedies(out: str | Path, seeds: int, learning_rate: float, first_seed: int = 0,
                        command: str = "") -> Path:
    """Every remedy on each seed at one learning rate, w = neg/pos. Returns the CSV path."""
    _quiet_tf()
    started = committed.utc_now()
    out = Path(out)
    committed.start_table(out, committed.REMEDY_COLUMNS)
    n = 0
    for seed in range(first_seed, first_seed + seeds):
        results, info = remedy_runs(seed, learning_rate)
        committed.append_rows(out, committed.REMEDY_COLUMNS, [remedy_row(r) for r in results])
        n += len(results)
        print(f"remedies seed {seed}: " + ", ".join(f"{r.remedy}={int(r.spiked)}/{r.metrics['pr_auc']:.3f}"
                                                   for r in results), flush=True)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=n))
    return out


def _bounded(parser, args) -> None:
    if not 1 <= args.seeds <= MAX_SEEDS:
        parser.error(f"--seeds must be 1–{MAX_SEEDS}, got {args.seeds}")
    if not 0 <= args.first_seed <= 2**31 - 1 - args.seeds:
        parser.error(f"--first-seed must be 0–{2**31 - 1 - args.seeds}, got {args.first_seed}")
    lrs = getattr(args, "learning_rates", None)
    if lrs is not None:
        vals = [float(v) for v in lrs.split(",")]
        if not 1 <= len(vals) <= MAX_LEARNING_RATES or not all(0 < v <= 1 for v in vals):
            parser.error(f"--learning-rates must be 1–{MAX_LEARNING_RATES} values in (0, 1], got {lrs}")
    lr = getattr(args, "learning_rate", None)
    if lr is not None and not 0 < lr <= 1:
        parser.error(f"--learning-rate must be in (0, 1], got {lr}")


def main(argv=None, prog: str = "python -m helpers.spikes.regenerate") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([prog] + [shlex.quote(a) for a in argv])
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("all", help="both tables at the documented settings (the default)")
    for name in ("spike_map", "sweep"):   # "sweep": the older name of the same command
        sm = sub.add_parser(name, help="the spike map: one CSV row per cell × seed")
        sm.add_argument("--out", default=SPIKE_MAP_DEFAULTS["out"])
        sm.add_argument("--seeds", type=int, default=SPIKE_MAP_DEFAULTS["seeds"], help=f"1–{MAX_SEEDS}")
        sm.add_argument("--first-seed", type=int, default=0)
        sm.add_argument("--learning-rates", default=SPIKE_MAP_DEFAULTS["learning_rates"])
        sm.add_argument("--positive-weights", default=SPIKE_MAP_DEFAULTS["positive_weights"])
    rm = sub.add_parser("remedies", help="every remedy on each seed at one learning rate (w = neg/pos)")
    rm.add_argument("--out", default=REMEDY_DEFAULTS["out"])
    rm.add_argument("--seeds", type=int, default=REMEDY_DEFAULTS["seeds"], help=f"1–{MAX_SEEDS}")
    rm.add_argument("--first-seed", type=int, default=0)
    rm.add_argument("--learning-rate", type=float, default=REMEDY_DEFAULTS["learning_rate"])
    args = parser.parse_args(argv)
    if args.command in (None, "all"):
        regenerate_spike_map(command=command, **SPIKE_MAP_DEFAULTS)
        regenerate_remedies(command=command, **REMEDY_DEFAULTS)
        return 0
    _bounded(parser, args)
    if args.command in ("spike_map", "sweep"):
        regenerate_spike_map(args.out, args.seeds, args.learning_rates, args.positive_weights,
                             first_seed=args.first_seed, command=command)
    else:
        regenerate_remedies(args.out, args.seeds, args.learning_rate, first_seed=args.first_seed,
                            command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
