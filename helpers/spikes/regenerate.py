"""Regenerate the committed tables of lesson 06, with provenance.

    python -m helpers.spikes.regenerate                 # both tables, the documented settings
    python -m helpers.spikes.regenerate spike_map --out build/spike_map.csv --seeds 20
    python -m helpers.spikes.regenerate remedies --out build/remedies.csv --seeds 6 --learning-rate 0.1
    python -m helpers.spikes.regenerate asker --out build/asker_regime.csv --seeds 10 --label-jitters 0,0.5 --jobs 4

Each table gets <table>.provenance.json beside it: the command, library versions,
UTC start/finish, machine and CPU count. Rows are written as they finish, so an
interrupted run leaves a valid partial CSV (and no provenance file). The settings of
the spike map and the remedies are helpers.spikes.SWEEP_DEFAULTS (see data/spike_map.md); those of the
asker's regime are helpers.spikes.ASKER_DEFAULTS.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from . import committed
from .asker import ASKER_DEFAULTS, asker_row, asker_run
from .sweeps import remedy_row, remedy_runs, spike_map_cell

SPIKE_MAP_DEFAULTS = dict(out="data/spike_map.csv", seeds=10, learning_rates="0.001,0.03,0.1",
                          positive_weights="30,neg/pos")
REMEDY_DEFAULTS = dict(out="data/remedies.csv", seeds=6, learning_rate=0.1)
ASKER_TABLE_DEFAULTS = dict(out="data/asker_regime.csv", seeds=10, label_jitters="0", jobs=4)
MAX_SEEDS = 50            # each seed is one ~210-step run per cell: 50 seeds × 6 cells stays within hours
MAX_LEARNING_RATES = 6
MIN_ASKER_STEPS, MAX_ASKER_STEPS = ASKER_DEFAULTS["check_step"], 5000   # a row re-checks its first check_step steps


def _parse_weights(text: str) -> list:
    return [w if w == "neg/pos" else float(w) for w in text.split(",")]


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _write_table(out: str | Path, columns: list[str], command: str, produce) -> Path:
    """Start the CSV `out`, append each (rows, message) that the generator `produce` yields as it
    comes (printing the message), then write the provenance. Returns the CSV path."""
    _quiet_tf()
    started = committed.utc_now()
    out = Path(out)
    committed.start_table(out, columns)
    n = 0
    for rows, message in produce:
        committed.append_rows(out, columns, rows)
        n += len(rows)
        print(message, flush=True)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=n))
    return out


def regenerate_spike_map(out: str | Path, seeds: int, learning_rates: str, positive_weights: str,
                         first_seed: int = 0, command: str = "") -> Path:
    """The spike map: one row per (seed, learning rate, weight), seeds outermost (a partial map has
    every cell). Returns the CSV path."""
    def produce():
        for seed in range(first_seed, first_seed + seeds):
            for lr in (float(v) for v in learning_rates.split(",")):
                for w in _parse_weights(positive_weights):
                    row = spike_map_cell(lr, w, [seed])[0]
                    yield [row], (f"spike_map lr={lr:g} w={w} seed={seed}: spiked={row['spiked']} "
                                  f"ratio={row['max_monitored_ratio']:.2f} pr_auc={row['pr_auc']:.3f}")
    return _write_table(out, committed.SPIKE_MAP_COLUMNS, command, produce())


def regenerate_remedies(out: str | Path, seeds: int, learning_rate: float, first_seed: int = 0,
                        command: str = "") -> Path:
    """Every remedy on each seed at one learning rate, w = neg/pos. Returns the CSV path."""
    def produce():
        for seed in range(first_seed, first_seed + seeds):
            results, _ = remedy_runs(seed, learning_rate)
            yield [remedy_row(r) for r in results], (
                f"remedies seed {seed}: " + ", ".join(f"{r.remedy}={int(r.spiked)}/{r.metrics['pr_auc']:.3f}"
                                                     for r in results))
    return _write_table(out, committed.REMEDY_COLUMNS, command, produce())


def regenerate_asker(out: str | Path, seeds: int, label_jitters: str, first_seed: int = 0,
                     command: str = "", steps: int | None = None) -> Path:
    """The asker's regime (ASKER_DEFAULTS; `steps` optimizer steps per run, default ASKER_DEFAULTS'):
    one row per (seed, label jitter), seeds outermost."""
    def produce():
        for seed in range(first_seed, first_seed + seeds):
            for jitter in (float(v) for v in label_jitters.split(",")):
                row = asker_row(asker_run(seed, label_jitter=jitter, steps=steps))
                yield [row], (f"asker jitter={jitter:g} seed={seed}: fitted at {row['fitted_step']} "
                              f"PR-AUC {row['pr_auc_final']} spikes after fit {row['spikes_after_fit']}")
    return _write_table(out, committed.ASKER_COLUMNS, command, produce())


def regenerate_asker_parallel(out: str | Path, seeds: int, label_jitters: str, jobs: int, first_seed: int = 0,
                              command: str = "", steps: int | None = None) -> Path:
    """regenerate_asker split over `jobs` child processes (consecutive seed ranges; each run is mostly
    one thread, so a 2-core machine finishes several at once), then merged in seed order into `out`,
    with one provenance file that lists every part's own provenance."""
    import subprocess
    import tempfile
    _quiet_tf()   # the children inherit it
    started = committed.utc_now()
    out = Path(out)
    sizes = [seeds // jobs + (1 if k < seeds % jobs else 0) for k in range(jobs)]
    starts = [first_seed + sum(sizes[:k]) for k in range(jobs)]
    with tempfile.TemporaryDirectory(prefix="asker_parts_") as tmp:
        parts = [Path(tmp) / f"part{k}.csv" for k in range(jobs)]
        procs = [subprocess.Popen([sys.executable, "-m", "helpers.spikes.regenerate", "asker", "--out", str(part),
                                   "--seeds", str(n), "--first-seed", str(s), "--label-jitters", label_jitters, "--jobs", "1"]
                                  + (["--steps", str(steps)] if steps else []))
                 for part, n, s in zip(parts, sizes, starts) if n > 0]
        codes = [pr.wait() for pr in procs]
        if any(codes):
            raise SystemExit(f"a part of the asker table failed (exit codes {codes}); {out} left unchanged")
        rows = [r for part in parts if part.exists() for r in committed.read_csv_rows(part)]
        infos = [json.loads(committed.provenance_path(part).read_text()) for part in parts if part.exists()]
    rows.sort(key=lambda r: (r["seed"], r["label_jitter"]))
    committed.start_table(out, committed.ASKER_COLUMNS)
    committed.append_rows(out, committed.ASKER_COLUMNS, rows)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=len(rows), jobs=jobs, parts=infos))
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
    steps = getattr(args, "steps", None)
    if steps is not None and not MIN_ASKER_STEPS <= steps <= MAX_ASKER_STEPS:
        parser.error(f"--steps must be {MIN_ASKER_STEPS}–{MAX_ASKER_STEPS}, got {steps}")
    jobs = getattr(args, "jobs", None)
    if jobs is not None and not 1 <= jobs <= 8:
        parser.error(f"--jobs must be 1–8, got {jobs}")
    jit = getattr(args, "label_jitters", None)
    if jit is not None:
        try:
            vals = [float(v) for v in jit.split(",")]
        except ValueError:
            vals = []
        if not 1 <= len(vals) <= 4 or not all(0 <= v <= 1 for v in vals):
            parser.error(f"--label-jitters must be 1–4 comma-separated values in [0, 1], got {jit}")
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
    ak = sub.add_parser("asker", help="the asker's regime: Adam 1e-3, w = neg/pos, 1,024-step series, trained to fit")
    ak.add_argument("--out", default=ASKER_TABLE_DEFAULTS["out"])
    ak.add_argument("--seeds", type=int, default=ASKER_TABLE_DEFAULTS["seeds"], help=f"1–{MAX_SEEDS}")
    ak.add_argument("--first-seed", type=int, default=0)
    ak.add_argument("--label-jitters", default=ASKER_TABLE_DEFAULTS["label_jitters"],
                    help="comma-separated probabilities that a labelled step is moved 1–2 steps off its signal")
    ak.add_argument("--jobs", type=int, default=ASKER_TABLE_DEFAULTS["jobs"],
                    help="child processes that share the seeds (1–8)")
    ak.add_argument("--steps", type=int, default=None,
                    help=f"optimizer steps per run, {MIN_ASKER_STEPS}–{MAX_ASKER_STEPS} (default {ASKER_DEFAULTS['steps']})")
    args = parser.parse_args(argv)
    if args.command in (None, "all"):
        regenerate_spike_map(command=command, **SPIKE_MAP_DEFAULTS)
        regenerate_remedies(command=command, **REMEDY_DEFAULTS)
        regenerate_asker_parallel(command=command, **ASKER_TABLE_DEFAULTS)
        return 0
    _bounded(parser, args)
    if args.command in ("spike_map", "sweep"):
        regenerate_spike_map(args.out, args.seeds, args.learning_rates, args.positive_weights,
                             first_seed=args.first_seed, command=command)
    elif args.command == "asker" and args.jobs > 1:
        regenerate_asker_parallel(args.out, args.seeds, args.label_jitters, min(args.jobs, args.seeds),
                                  first_seed=args.first_seed, command=command, steps=args.steps)
    elif args.command == "asker":
        regenerate_asker(args.out, args.seeds, args.label_jitters, first_seed=args.first_seed, command=command,
                         steps=args.steps)
    else:
        regenerate_remedies(args.out, args.seeds, args.learning_rate, first_seed=args.first_seed,
                            command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
