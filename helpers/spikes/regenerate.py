"""Regenerate the committed tables of lesson 06, with provenance.

    python -m helpers.spikes.regenerate                 # both tables, the documented settings
    python -m helpers.spikes.regenerate spike_map --out build/spike_map.csv --seeds 20
    python -m helpers.spikes.regenerate asker --out build/asker_regime.csv --seeds 10 --label-jitters 0,0.5 --jobs 4
    python -m helpers.spikes.regenerate checkpoints --seeds 0,2    # the fitted models, from asker_regime.csv
    python -m helpers.spikes.regenerate remedies --out build/remedies.csv --seeds 0,2

Each table gets <table>.provenance.json beside it: the command, library versions,
UTC start/finish, machine and CPU count. Rows are written as they finish, so an
interrupted run leaves a valid partial CSV (and no provenance file). The settings of
the spike map are helpers.spikes.SWEEP_DEFAULTS (see data/spike_map.md); those of the asker's regime
helpers.spikes.ASKER_DEFAULTS. The checkpoints are the asker-regime models of the fitted seeds, trained
to their fitted step (data/asker_checkpoints/, listed with provenance in checkpoints.csv); the remedies table
(helpers.spikes.stretch) starts every row from one of them. `all` runs them in that order.
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
from .stretch import CHECKPOINT_DIR, STRETCH_COLUMNS, STRETCH_DEFAULTS, STRETCH_REMEDIES, make_checkpoint, stretch_row, stretch_run
from .sweeps import spike_map_cell
from ..workbook.committed import parse_seeds

SPIKE_MAP_DEFAULTS = dict(out="data/spike_map.csv", seeds=10, learning_rates="0.001,0.03,0.1",
                          positive_weights="30,neg/pos")
REMEDY_DEFAULTS = dict(out="data/remedies.csv", seeds=",".join(map(str, STRETCH_DEFAULTS["seeds"])))
CHECKPOINT_DEFAULTS = dict(seeds=REMEDY_DEFAULTS["seeds"])
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


def regenerate_remedies(out: str | Path, seeds: str, command: str = "") -> Path:
    """The remedies against a stretch of positive-free batches (helpers.spikes.stretch), from each seed's
    checkpoint: every remedy at STRETCH_DEFAULTS' stretch, and the baseline at the shorter stretches too."""
    def produce():
        for seed in parse_seeds(seeds):
            jobs = [(name, None) for name in STRETCH_REMEDIES] + [("baseline", q) for q in STRETCH_DEFAULTS["quiet_lengths"]]
            for name, quiet in jobs:
                row = stretch_row(stretch_run(seed, name, quiet=quiet))
                yield [row], (f"remedies seed {seed} {name} quiet={row['quiet']}: first ordinary batch "
                              f"{row['first_normal_bce']} recovery {row['recovery_steps']} PR-AUC {row['pr_auc_final']}")
    return _write_table(out, STRETCH_COLUMNS, command, produce())


def regenerate_checkpoints(seeds: str, command: str = "", table: str | Path | None = None) -> Path:
    """Each seed's asker-regime model at its fitted step (read from data/asker_regime.csv), with its Adam
    state, in data/asker_checkpoints/seed<N>.npz, listed in checkpoints.csv there (with its provenance)."""
    _quiet_tf()
    started = committed.utc_now()
    rows = {r["seed"]: r for r in committed.read_csv_rows(table or committed.DATA_DIR / "asker_regime.csv")
            if r["label_jitter"] == 0}
    metas = []
    for seed in parse_seeds(seeds):
        if seed not in rows or rows[seed]["fitted_step"] == "":
            raise SystemExit(f"seed {seed} has no fitted step in asker_regime.csv; "
                             f"fitted seeds: {sorted(s for s, r in rows.items() if r['fitted_step'] != '')}")
        metas.append(make_checkpoint(seed, int(rows[seed]["fitted_step"])))
        print(f"checkpoint seed {seed}: step {metas[-1]['step']}, validation PR-AUC {metas[-1]['pr_auc']}", flush=True)
    path = CHECKPOINT_DIR / "checkpoints.csv"
    columns = ["seed", "step", "learning_rate", "pr_auc", "positive_weight"]
    committed.start_table(path, columns)
    committed.append_rows(path, columns, metas)
    committed.write_provenance(path, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                          rows=len(metas)))
    return path


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
    rm = sub.add_parser("remedies", help="every remedy from the fitted checkpoints, against a stretch of "
                                         "positive-free batches (Adam 1e-3)")
    rm.add_argument("--out", default=REMEDY_DEFAULTS["out"])
    rm.add_argument("--seeds", default=REMEDY_DEFAULTS["seeds"], help="comma-separated seeds that have a checkpoint")
    ck = sub.add_parser("checkpoints", help="the fitted asker-regime models (data/asker_checkpoints/)")
    ck.add_argument("--seeds", default=CHECKPOINT_DEFAULTS["seeds"],
                    help="comma-separated seeds with a fitted step in data/asker_regime.csv")
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
        regenerate_asker_parallel(command=command, **ASKER_TABLE_DEFAULTS)
        regenerate_checkpoints(command=command, **CHECKPOINT_DEFAULTS)
        regenerate_remedies(command=command, **REMEDY_DEFAULTS)
        return 0
    if args.command in ("remedies", "checkpoints"):
        try:
            parse_seeds(args.seeds)
        except ValueError as e:
            parser.error(str(e))
        if args.command == "checkpoints":
            regenerate_checkpoints(args.seeds, command=command)
        else:
            missing = [s for s in parse_seeds(args.seeds) if not (CHECKPOINT_DIR / f"seed{s}.npz").exists()]
            if missing:
                parser.error(f"--seeds: no checkpoint for seed(s) {missing} in {CHECKPOINT_DIR}; "
                             "run `python -m helpers.spikes.regenerate checkpoints --seeds ...` first")
            regenerate_remedies(args.out, args.seeds, command=command)
        return 0
    _bounded(parser, args)
    if args.command in ("spike_map", "sweep"):
        regenerate_spike_map(args.out, args.seeds, args.learning_rates, args.positive_weights,
                             first_seed=args.first_seed, command=command)
    elif args.command == "asker" and args.jobs > 1:
        regenerate_asker_parallel(args.out, args.seeds, args.label_jitters, min(args.jobs, args.seeds),
                                  first_seed=args.first_seed, command=command, steps=args.steps)
    else:
        regenerate_asker(args.out, args.seeds, args.label_jitters, first_seed=args.first_seed, command=command,
                         steps=args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
