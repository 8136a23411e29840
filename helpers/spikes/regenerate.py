"""Regenerate the committed tables of lesson 06, with provenance.

    python -m helpers.spikes.regenerate                 # every table, the documented settings, 2 processes
    python -m helpers.spikes.regenerate spike_map --out build/spike_map.csv --seeds 20
    python -m helpers.spikes.regenerate asker --out build/asker_regime.csv --seeds 10 --label-jitters 0,0.5 --jobs 2
    python -m helpers.spikes.regenerate checkpoints --seeds 0,2    # the fitted models, from asker_regime.csv
    python -m helpers.spikes.regenerate remedies --out build/remedies.csv --seeds 0,2

Each table gets <table>.provenance.json beside it: the command, library versions,
UTC start/finish, machine and CPU count. A single table's rows are written as they finish, so an
interrupted run leaves a valid partial CSV (and no provenance file). The settings of
the spike map are helpers.spikes.SWEEP_DEFAULTS (see data/spike_map.md); those of the asker's regime
helpers.spikes.ASKER_DEFAULTS. The checkpoints are the asker-regime models of the fitted seeds at their
fitted step (data/asker_checkpoints/, listed with provenance in checkpoints.csv); the remedies table
(helpers.spikes.stretch) starts every row from one of them. `all` (the default) runs every table as
child processes, two at a time: the asker runs of the checkpoint seeds save their models as they pass
the fit, and the remedies of a seed start as soon as its checkpoint exists; the committed files are
replaced only when every part has finished. `checkpoints` remakes the checkpoints alone by retraining
the committed rows' first steps.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from . import committed
from .asker import ASKER_DEFAULTS, asker_row, asker_run
from .stretch import (CHECKPOINT_DIR, SCRATCH_COLUMNS, SCRATCH_DEFAULTS, STRETCH_COLUMNS, STRETCH_DEFAULTS,
                      STRETCH_REMEDIES, checkpoint_path, make_checkpoint, scratch_row, scratch_run, stretch_row,
                      stretch_run)
from .sweeps import spike_map_cell
from ..workbook.committed import parse_seeds

SPIKE_MAP_DEFAULTS = dict(out="data/spike_map.csv", seeds=10, learning_rates="0.001,0.03,0.1",
                          positive_weights="30,neg/pos")
REMEDY_DEFAULTS = dict(out="data/remedies.csv", seeds=",".join(map(str, STRETCH_DEFAULTS["seeds"])))
CHECKPOINT_DEFAULTS = dict(seeds=REMEDY_DEFAULTS["seeds"])
SCRATCH_TABLE_DEFAULTS = dict(out="data/from_scratch.csv", seeds=",".join(map(str, SCRATCH_DEFAULTS["seeds"])),
                              remedies=",".join(SCRATCH_DEFAULTS["remedies"]))
ASKER_TABLE_DEFAULTS = dict(out="data/asker_regime.csv", seeds=10, label_jitters="0", jobs=2)
ALL_JOBS = 2              # two children at once: on the 2 cores, 1.27× the steps of one process (see _launch)
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


def regenerate_remedies(out: str | Path, seeds: str, command: str = "",
                        checkpoint_dir: str | Path | None = None) -> Path:
    """The remedies against a stretch of positive-free batches (helpers.spikes.stretch), from each seed's
    checkpoint (in `checkpoint_dir`, default CHECKPOINT_DIR): every remedy at STRETCH_DEFAULTS' stretch,
    and the baseline at the shorter stretches too."""
    def produce():
        for seed in parse_seeds(seeds):
            jobs = [(name, None) for name in STRETCH_REMEDIES] + [("baseline", q) for q in STRETCH_DEFAULTS["quiet_lengths"]]
            for name, quiet in jobs:
                row = stretch_row(stretch_run(seed, name, quiet=quiet, checkpoint_dir=checkpoint_dir))
                yield [row], (f"remedies seed {seed} {name} quiet={row['quiet']}: first ordinary batch "
                              f"{row['first_normal_bce']} recovery {row['recovery_steps']} PR-AUC {row['pr_auc_final']}")
    return _write_table(out, STRETCH_COLUMNS, command, produce())


def regenerate_from_scratch(out: str | Path, seeds: str, remedies: str, command: str = "") -> Path:
    """Each remedy of `remedies` trained from initialisation in the asker's regime (stretch.scratch_run):
    one row per (seed, remedy), seeds outermost."""
    def produce():
        for seed in parse_seeds(seeds):
            for name in remedies.split(","):
                row = scratch_row(scratch_run(seed, name))
                yield [row], (f"from scratch seed {seed} {name}: fitted at {row['fitted_step']} "
                              f"PR-AUC {row['pr_auc_final']} spikes after fit {row['spikes_after_fit']}")
    return _write_table(out, SCRATCH_COLUMNS, command, produce())


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
    return _write_checkpoint_list(metas, command, started)


CHECKPOINT_COLUMNS = ["seed", "step", "learning_rate", "pr_auc", "positive_weight"]


def _write_checkpoint_list(metas: list[dict], command: str, started, **extra) -> Path:
    """CHECKPOINT_DIR/checkpoints.csv (one row per checkpoint's metadata) and its provenance."""
    path = CHECKPOINT_DIR / "checkpoints.csv"
    committed.start_table(path, CHECKPOINT_COLUMNS)
    committed.append_rows(path, CHECKPOINT_COLUMNS, metas)
    committed.write_provenance(path, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                          rows=len(metas), **extra))
    return path


def regenerate_asker(out: str | Path, seeds: int, label_jitters: str, first_seed: int = 0,
                     command: str = "", steps: int | None = None, checkpoints: str = "",
                     checkpoint_dir: str | Path | None = None) -> Path:
    """The asker's regime (ASKER_DEFAULTS; at most `steps` optimizer steps per run, default ASKER_DEFAULTS'; a run
    ends ASKER_DEFAULTS["after_fit_steps"] after its fit):
    one row per (seed, label jitter), seeds outermost. The clean runs of the seeds in `checkpoints`
    ("0,2") save their model and Adam state at the fitted step into `checkpoint_dir` (default CHECKPOINT_DIR)."""
    keep = set(parse_seeds(checkpoints)) if checkpoints else set()

    def produce():
        for seed in range(first_seed, first_seed + seeds):
            for jitter in (float(v) for v in label_jitters.split(",")):
                to = checkpoint_path(seed, checkpoint_dir) if seed in keep and jitter == 0 else None
                row = asker_row(asker_run(seed, label_jitter=jitter, steps=steps, checkpoint_to=to))
                yield [row], (f"asker jitter={jitter:g} seed={seed}: fitted at {row['fitted_step']} "
                              f"PR-AUC {row['pr_auc_final']} spikes after fit {row['spikes_after_fit']}")
    return _write_table(out, committed.ASKER_COLUMNS, command, produce())


def _launch(argv: list[str]):
    """A child of this module. One TensorFlow thread each: measured on the 2-core machine, two such children
    train 1.27× the steps of one process with both cores (two children with two threads each: 1.19×), and
    their losses are bit-identical to a two-thread run's."""
    import os
    import subprocess
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "helpers.spikes.regenerate", *argv], env=env)


def _run_parts(tasks: list[dict], jobs: int, launch=_launch, poll_seconds: float = 1.0) -> None:
    """Run `tasks` ({"name", "argv": this module's arguments, "after": names it needs finished}) as child
    processes of this module (`launch(argv)` → a Popen), at most `jobs` at once, each started as soon as a
    worker is free and its `after` tasks have finished, in list order. Raises SystemExit naming the failed
    parts and those not run."""
    import time
    pending, running, done, failed = list(tasks), {}, set(), []
    while pending or running:
        for t in [t for t in pending if set(t.get("after", ())) <= done][:max(jobs - len(running), 0)]:
            pending.remove(t)
            running[t["name"]] = launch(t["argv"])
        if not running:   # what is left waits on a failed part
            break
        time.sleep(poll_seconds)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                (failed.append(f"{name} (exit {proc.returncode})") if proc.returncode else done.add(name))
    if failed or pending:
        raise SystemExit(f"regeneration stopped: failed {failed}, not run {[t['name'] for t in pending]}; "
                         "the committed tables are left unchanged")


def _merge(out: Path, columns: list[str], parts: list[Path], command: str, started, key, **extra) -> Path:
    """The parts' rows, sorted by `key`, into `out`, with one provenance that lists every part's own."""
    rows = sorted((r for part in parts for r in committed.read_csv_rows(part, keep_text=("positive_weight",))), key=key)
    infos = [json.loads(committed.provenance_path(part).read_text()) for part in parts]
    committed.start_table(out, columns)
    committed.append_rows(out, columns, rows)
    committed.write_provenance(out, committed.provenance(command, started=started, finished=committed.utc_now(),
                                                         rows=len(rows), parts=infos, **extra))
    return out


def _asker_tasks(tmp: Path, seeds: int, label_jitters: str, first_seed: int = 0, steps: int | None = None,
                 checkpoints: str = "", checkpoint_dir: Path | None = None) -> list[dict]:
    """One child per seed (the checkpointed seeds first, so the remedies can start early)."""
    keep = parse_seeds(checkpoints) if checkpoints else []
    order = [s for s in keep if first_seed <= s < first_seed + seeds] + \
        [s for s in range(first_seed, first_seed + seeds) if s not in keep]
    return [{"name": f"asker seed {s}", "out": tmp / f"asker{s}.csv",
             "argv": ["asker", "--out", str(tmp / f"asker{s}.csv"), "--seeds", "1", "--first-seed", str(s),
                      "--label-jitters", label_jitters, "--jobs", "1"]
             + (["--steps", str(steps)] if steps else [])
             + (["--checkpoints", str(s), "--checkpoint-dir", str(checkpoint_dir)] if s in keep else [])}
            for s in order]


def regenerate_asker_parallel(out: str | Path, seeds: int, label_jitters: str, jobs: int, first_seed: int = 0,
                              command: str = "", steps: int | None = None) -> Path:
    """regenerate_asker split over child processes, one seed each, `jobs` at a time (a run's step uses
    little more than one core, so a 2-core machine finishes two at once faster than one after the other),
    then merged in seed order into `out`, with one provenance file that lists every part's own."""
    import tempfile
    _quiet_tf()   # the children inherit it
    started = committed.utc_now()
    with tempfile.TemporaryDirectory(prefix="asker_parts_") as tmp:
        tasks = _asker_tasks(Path(tmp), seeds, label_jitters, first_seed, steps)
        _run_parts(tasks, jobs)
        return _merge(Path(out), committed.ASKER_COLUMNS, [t["out"] for t in tasks], command, started,
                      key=lambda r: (r["seed"], r["label_jitter"]), jobs=jobs)


def regenerate_all(jobs: int = 2, command: str = "") -> None:
    """Every lesson-06 table at the documented settings, as child processes `jobs` at a time: the spike map
    in two halves of its seeds, the asker's regime one seed each (the checkpoint seeds save their fitted
    models as they pass the fit), the remedies one seed each once that seed's checkpoint exists. The
    committed files are replaced only when every part has finished."""
    import shutil
    import tempfile
    _quiet_tf()
    started = committed.utc_now()
    ck_seeds = CHECKPOINT_DEFAULTS["seeds"]
    with tempfile.TemporaryDirectory(prefix="regenerate_") as tmp:
        tmp = Path(tmp)
        ck_dir = tmp / "checkpoints"
        asker = _asker_tasks(tmp, ASKER_TABLE_DEFAULTS["seeds"], ASKER_TABLE_DEFAULTS["label_jitters"],
                             checkpoints=ck_seeds, checkpoint_dir=ck_dir)
        n, half = SPIKE_MAP_DEFAULTS["seeds"], -(-SPIKE_MAP_DEFAULTS["seeds"] // 2)
        spike = [{"name": f"spike map seeds {a}–{b - 1}", "out": tmp / f"spike{a}.csv",
                  "argv": ["spike_map", "--out", str(tmp / f"spike{a}.csv"), "--seeds", str(b - a), "--first-seed", str(a),
                           "--learning-rates", SPIKE_MAP_DEFAULTS["learning_rates"],
                           "--positive-weights", SPIKE_MAP_DEFAULTS["positive_weights"]]}
                 for a, b in ((0, half), (half, n))]
        remedies = [{"name": f"remedies seed {s}", "out": tmp / f"remedies{s}.csv", "after": [f"asker seed {s}"],
                     "argv": ["remedies", "--out", str(tmp / f"remedies{s}.csv"), "--seeds", str(s),
                              "--checkpoint-dir", str(ck_dir)]}
                 for s in parse_seeds(ck_seeds)]
        scratch = [{"name": f"from scratch seed {s} {r}", "out": tmp / f"scratch{s}_{r}.csv",
                    "argv": ["from_scratch", "--out", str(tmp / f"scratch{s}_{r}.csv"), "--seeds", str(s), "--remedies", r]}
                   for s in parse_seeds(SCRATCH_TABLE_DEFAULTS["seeds"]) for r in SCRATCH_TABLE_DEFAULTS["remedies"].split(",")]
        k = len(parse_seeds(ck_seeds))   # the checkpoint seeds' asker runs first, so that their remedies start early;
        _run_parts(asker[:k] + remedies + asker[k:] + scratch + spike, jobs)   # then the longer parts before the shorter
        outs = {}
        outs["spike_map"] = _merge(tmp / "spike_map.csv", committed.SPIKE_MAP_COLUMNS, [t["out"] for t in spike],
                                   command, started, key=lambda r: (r["seed"], r["learning_rate"]), jobs=jobs)
        outs["asker"] = _merge(tmp / "asker_regime.csv", committed.ASKER_COLUMNS, [t["out"] for t in asker],
                               command, started, key=lambda r: (r["seed"], r["label_jitter"]), jobs=jobs)
        outs["remedies"] = _merge(tmp / "remedies.csv", STRETCH_COLUMNS, [t["out"] for t in remedies],
                                  command, started, key=lambda r: r["seed"], jobs=jobs)
        outs["from_scratch"] = _merge(tmp / "from_scratch.csv", SCRATCH_COLUMNS, [t["out"] for t in scratch],
                                      command, started, key=lambda r: r["seed"], jobs=jobs)
        metas = []
        for s in parse_seeds(ck_seeds):
            with np.load(checkpoint_path(s, ck_dir)) as z:
                metas.append(json.loads(str(z["meta"])))
        for name, dest in (("spike_map", SPIKE_MAP_DEFAULTS["out"]), ("asker", ASKER_TABLE_DEFAULTS["out"]),
                           ("remedies", REMEDY_DEFAULTS["out"]), ("from_scratch", SCRATCH_TABLE_DEFAULTS["out"])):
            dest = committed.DATA_DIR / Path(dest).name
            shutil.copyfile(outs[name], dest)
            shutil.copyfile(committed.provenance_path(outs[name]), committed.provenance_path(dest))
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        for s in parse_seeds(ck_seeds):
            shutil.copyfile(checkpoint_path(s, ck_dir), checkpoint_path(s))
        _write_checkpoint_list(metas, command, started, saved_by="the asker runs of these seeds, at their fitted step")


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
    al = sub.add_parser("all", help="every table at the documented settings (the default)")
    al.add_argument("--jobs", type=int, default=ALL_JOBS, help="child processes at once (1–8)")
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
    rm.add_argument("--checkpoint-dir", default=str(CHECKPOINT_DIR), help="where the seeds' checkpoints are")
    fs = sub.add_parser("from_scratch", help="remedies trained from initialisation in the asker's regime")
    fs.add_argument("--out", default=SCRATCH_TABLE_DEFAULTS["out"])
    fs.add_argument("--seeds", default=SCRATCH_TABLE_DEFAULTS["seeds"], help="comma-separated seeds")
    fs.add_argument("--remedies", default=SCRATCH_TABLE_DEFAULTS["remedies"],
                    help=f"comma-separated, of {', '.join(SCRATCH_DEFAULTS['remedies'])}")
    ck = sub.add_parser("checkpoints", help="the fitted asker-regime models (data/asker_checkpoints/)")
    ck.add_argument("--seeds", default=CHECKPOINT_DEFAULTS["seeds"],
                    help="comma-separated seeds with a fitted step in data/asker_regime.csv")
    ak = sub.add_parser("asker", help="the asker's regime: Adam 1e-3, w = neg/pos, batch 128, 512-step series, trained "
                                      "to the fit and on")
    ak.add_argument("--out", default=ASKER_TABLE_DEFAULTS["out"])
    ak.add_argument("--seeds", type=int, default=ASKER_TABLE_DEFAULTS["seeds"], help=f"1–{MAX_SEEDS}")
    ak.add_argument("--first-seed", type=int, default=0)
    ak.add_argument("--label-jitters", default=ASKER_TABLE_DEFAULTS["label_jitters"],
                    help="comma-separated probabilities that a labelled step is moved 1–2 steps off its signal")
    ak.add_argument("--jobs", type=int, default=ASKER_TABLE_DEFAULTS["jobs"],
                    help="child processes that share the seeds (1–8)")
    ak.add_argument("--steps", type=int, default=None,
                    help=f"the most optimizer steps per run, {MIN_ASKER_STEPS}–{MAX_ASKER_STEPS} (default "
                         f"{ASKER_DEFAULTS['steps']}); a run ends {ASKER_DEFAULTS['after_fit_steps']} steps after its fit")
    ak.add_argument("--checkpoints", default="", help="comma-separated seeds whose fitted model is saved (with --jobs 1)")
    ak.add_argument("--checkpoint-dir", default=str(CHECKPOINT_DIR), help="where --checkpoints are saved")
    args = parser.parse_args(argv)
    if args.command in (None, "all"):
        jobs = getattr(args, "jobs", ALL_JOBS)
        if not 1 <= jobs <= 8:
            parser.error(f"--jobs must be 1–8, got {jobs}")
        regenerate_all(jobs, command=command)
        return 0
    if args.command == "from_scratch":
        try:
            parse_seeds(args.seeds)
        except ValueError as e:
            parser.error(str(e))
        bad = [r for r in args.remedies.split(",") if r not in SCRATCH_DEFAULTS["remedies"]]
        if bad:
            parser.error(f"--remedies: {', '.join(bad)} not one of {', '.join(SCRATCH_DEFAULTS['remedies'])}")
        regenerate_from_scratch(args.out, args.seeds, args.remedies, command=command)
        return 0
    if args.command in ("remedies", "checkpoints"):
        try:
            parse_seeds(args.seeds)
        except ValueError as e:
            parser.error(str(e))
        if args.command == "checkpoints":
            regenerate_checkpoints(args.seeds, command=command)
        else:
            missing = [s for s in parse_seeds(args.seeds) if not checkpoint_path(s, args.checkpoint_dir).exists()]
            if missing:
                parser.error(f"--seeds: no checkpoint for seed(s) {missing} in {args.checkpoint_dir}; "
                             "run `python -m helpers.spikes.regenerate checkpoints --seeds ...` first")
            regenerate_remedies(args.out, args.seeds, command=command, checkpoint_dir=args.checkpoint_dir)
        return 0
    _bounded(parser, args)
    if args.command in ("spike_map", "sweep"):
        regenerate_spike_map(args.out, args.seeds, args.learning_rates, args.positive_weights,
                             first_seed=args.first_seed, command=command)
    elif args.command == "asker" and args.jobs > 1:
        regenerate_asker_parallel(args.out, args.seeds, args.label_jitters, min(args.jobs, args.seeds),
                                  first_seed=args.first_seed, command=command, steps=args.steps)
    else:
        if args.checkpoints:
            try:
                parse_seeds(args.checkpoints)
            except ValueError as e:
                parser.error(str(e).replace("--seeds", "--checkpoints"))
        regenerate_asker(args.out, args.seeds, args.label_jitters, first_seed=args.first_seed, command=command,
                         steps=args.steps, checkpoints=args.checkpoints, checkpoint_dir=args.checkpoint_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
