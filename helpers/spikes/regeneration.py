"""The regeneration of lesson 07's committed runs, data/spike_runs/ (`python -m helpers.spikes.asker_state`).

    jobs(seeds, out)              runs a and b from the first step, then branches from their snapshots
    scratch_jobs(seeds, runs)     every remedy from the first step of variant b (--from-scratch), at the page's
                                  size or another (--units 64: the clip waits for that size's own no-remedy run)
    job(spec)                     one job in a worker process: trains, then writes <name>.npz
    parse_args / main             the command line, checked; two processes at a time by default
    write_runs_provenance         <out>/provenance.json: command, versions, machine, dates, settings

Every run is a helpers.spikes.asker_state.Run, so the committed logs come from the code the page checks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from .asker_state import (BRANCH_STEPS, DATA, HOLD_STEPS, MAX_STEPS_A, REMEDIES, SCRATCH_DIR, SCRATCH_STEPS,
                          SCRATCH_UNITS, SNAPSHOT_B, SPIKE_RULE, STEPS_B, TARGET_LOSS, VARIANTS, SpikeRun, find_runs_dir,
                          scratch_dir, variant_data)


def reached_step(loss, target: float | None = None, window: int = 50):
    """First step k ≥ window where the median of the previous `window` batch losses is ≤ target
    (default TARGET_LOSS); None if never."""
    loss, target = np.asarray(loss), TARGET_LOSS if target is None else target
    for k in range(window, len(loss) + 1):
        if np.median(loss[k - window:k]) <= target:
            return k
    return None


def _save(out, name, run: SpikeRun, **meta):
    import json
    import time
    arrays = run.arrays()
    arrays["meta"] = np.array(json.dumps({"name": name, "seed": run.seed, "variant": run.data.variant,
                                          "remedy": run.remedy, "positive_weight": run.w,
                                          "clip": None if not np.isfinite(run.clip) else run.clip,
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                          **run.final_metrics(), **meta}))
    tmp = out / f".{name}.partial.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out / f"{name}.npz")


def job(spec: dict) -> str:
    """One job of the regeneration: kind "a" or "b" (from the first step), or "branch"
    (from a snapshot: variant c/d from a's, or a remedy from b's). Writes <name>.npz."""
    import os
    import time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out, seed, kind = Path(spec["out"]), spec["seed"], spec["kind"]
    snaps = out / "snapshots"
    (out if kind == "scratch" else snaps).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if kind == "a":
        run, reached = SpikeRun(variant_data("a", seed), seed=seed), None
        while run.step < MAX_STEPS_A and (reached is None or run.step < reached + HOLD_STEPS):
            run.train(50)
            if reached is None and (reached := reached_step(run.log["loss"])) is not None:
                np.savez_compressed(snaps / f"a_s{seed}.npz", **run.state())
        name, meta = f"a_s{seed}", {"reached": reached}
    elif kind == "b":
        run = SpikeRun(variant_data("b", seed), seed=seed)
        run.train(SNAPSHOT_B)
        np.savez_compressed(snaps / f"b_s{seed}.npz", **run.state())
        run.train(STEPS_B - SNAPSHOT_B)
        name, meta = f"b_s{seed}", {"reached": reached_step(run.log["loss"])}
    elif kind == "scratch":
        # variant b from the first step with one remedy; clip at the 95th percentile of the gradient norms of
        # the same seed's unremedied run of the same size over the same steps (at 16 units: the committed b run)
        clip = None
        if spec["remedy"] == "clip":
            clip = float(np.percentile(np.load(spec["clip_from"])["grad_norm"][:SCRATCH_STEPS], 95))
        units = spec.get("units", SCRATCH_UNITS)
        run = SpikeRun(variant_data("b", seed), seed=seed, remedy=spec["remedy"], clip=clip, units=units)
        run.train(SCRATCH_STEPS)
        run.evaluate()                       # the validation PR-AUC after the last step, at eval_step SCRATCH_STEPS
        name, meta = f"scratch_b_{spec['remedy']}_s{seed}", {"from_step": 0, "units": units}
    else:
        src = spec["source"]
        state = dict(np.load(snaps / f"{src}_s{seed}.npz"))
        clip = None
        if spec["remedy"] == "clip":
            g = np.load(out / f"{src}_s{seed}.npz")["grad_norm"]
            clip = float(np.percentile(g[1000:SNAPSHOT_B], 95))
        run = SpikeRun(variant_data(spec["variant"], seed), seed=seed, remedy=spec["remedy"], clip=clip)
        run.load_state(state)
        start = run.step
        run.train(BRANCH_STEPS)
        name = f"{src}_to_{spec['variant']}_{spec['remedy']}_s{seed}"
        meta = {"source": src, "from_step": start}
    _save(out, name, run, seconds_per_step=(time.time() - t0) / max(1, len(run.log["loss"])), **meta)
    return name


def jobs(seeds, out) -> tuple[list, list]:
    """The two phases: runs from the first step, then branches from their snapshots."""
    first = [dict(kind=k, seed=s, out=str(out)) for s in seeds for k in ("a", "b")]
    branches = [dict(kind="branch", source="a", variant=v, remedy="none", seed=s, out=str(out))
                 for s in seeds for v in ("a", "c", "d")]
    branches += [dict(kind="branch", source="b", variant="b", remedy=r, seed=s, out=str(out))
                 for s in seeds for r in REMEDIES]
    return first, branches


def scratch_jobs(seeds, runs, units: int = SCRATCH_UNITS, remedies=None) -> list:
    """The phases of the runs from the first step of variant b, one remedy each, the cheaper windowed runs last.
    At the page's size the clip is set from the committed b run (the same run as no remedy), so there is one phase;
    at another size it is set from that size's own no-remedy run, so clip waits for a second phase."""
    out = scratch_dir(runs, units)
    order = sorted(remedies or REMEDIES, key=lambda r: r.startswith("windows"))
    ref = (lambda s: Path(runs) / f"b_s{s}.npz") if units == SCRATCH_UNITS else (lambda s: out / f"scratch_b_none_s{s}.npz")
    spec = lambda r, s: dict(kind="scratch", remedy=r, seed=s, units=units, runs=str(runs), out=str(out),
                             clip_from=str(ref(s)))
    if units == SCRATCH_UNITS:
        return [[spec(r, s) for r in order for s in seeds]]
    return [[spec(r, s) for r in order if r != "clip" for s in seeds],
            [spec("clip", s) for s in seeds if "clip" in order]]


def parse_args(argv=None):
    """The command line of the regeneration, checked: --seeds (1–10 distinct seeds ≥ 0), --workers (1–8), --out."""
    import argparse
    from ..workbook.committed import parse_seeds
    ap = argparse.ArgumentParser(prog="python -m helpers.spikes.asker_state",
                                 description="Regenerate lesson 07's per-step logs and snapshots (data/spike_runs/).")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    ap.add_argument("--out", default=None, help="folder to write (default: the workbook's data/spike_runs/)")
    ap.add_argument("--workers", type=int, default=2, help="processes at a time, 1-8 (default 2)")
    ap.add_argument("--from-scratch", action="store_true",
                    help=f"instead: every remedy from the first step of variant b, {SCRATCH_STEPS} steps, into "
                         f"<out>/{SCRATCH_DIR}/ (needs the b runs of the same seeds in <out>)")
    ap.add_argument("--units", type=int, default=SCRATCH_UNITS,
                    help=f"with --from-scratch: LSTM units (default {SCRATCH_UNITS}, the page's size; another size "
                         f"writes <out>/{SCRATCH_DIR}_lstm<units>/ and sets its clip from its own no-remedy run)")
    ap.add_argument("--remedies", default=None,
                    help="with --from-scratch: comma-separated remedies (default all; clip at another size needs none)")
    a = ap.parse_args(argv)
    if not 4 <= a.units <= 256:
        ap.error(f"--units {a.units}: expected 4-256")
    if (a.units != SCRATCH_UNITS or a.remedies) and not a.from_scratch:
        ap.error("--units and --remedies go with --from-scratch")
    if a.remedies is not None:
        a.remedies = [r.strip() for r in a.remedies.split(",") if r.strip()]
        unknown = sorted(set(a.remedies) - set(REMEDIES))
        if unknown or not a.remedies:
            ap.error(f"--remedies: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(REMEDIES)}")
        if a.units != SCRATCH_UNITS and "clip" in a.remedies and "none" not in a.remedies:
            ap.error(f"--remedies: clip at {a.units} units is set from that size's no-remedy run; add none")
    try:
        a.seeds = parse_seeds(a.seeds)
    except ValueError as e:
        ap.error(str(e))
    if not 1 <= a.workers <= 8:
        ap.error(f"--workers {a.workers}: expected 1-8")
    a.out = Path(a.out) if a.out else find_runs_dir()
    return a


def main(argv=None) -> int:
    """python -m helpers.spikes.asker_state [--seeds 0,1,2,3,4] [--out data/spike_runs] [--workers 2]"""
    import multiprocessing as mp
    import sys
    import time
    a = parse_args(argv)
    seeds, out = a.seeds, a.out
    out.mkdir(parents=True, exist_ok=True)
    if a.from_scratch:
        missing = [f"b_s{s}.npz" for s in seeds if not (out / f"b_s{s}.npz").exists()]
        if missing and a.units == SCRATCH_UNITS:
            print(f"error: --from-scratch needs the b runs in {out}, missing {', '.join(missing)}: "
                  f"run python -m helpers.spikes.asker_state first", file=sys.stderr)
            return 2
        phases, target = scratch_jobs(seeds, out, a.units, a.remedies), scratch_dir(out, a.units)
        target.mkdir(exist_ok=True)
    else:
        phases, target = list(jobs(seeds, out)), out
    from ..workbook.committed import utc_now
    t0, started = time.time(), utc_now()
    with mp.get_context("spawn").Pool(a.workers, maxtasksperchild=1) as pool:
        for phase in phases:
            for name in pool.imap_unordered(job, phase):
                print(f"{time.time() - t0:7.0f} s  {name}", flush=True)
    write_runs_provenance(target, seeds, started, utc_now(), a.workers, from_scratch=a.from_scratch,
                          units=a.units, remedies=a.remedies)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def write_runs_provenance(out, seeds, started, finished, workers: int = 2, from_scratch: bool = False,
                          units: int = SCRATCH_UNITS, remedies=None):
    """out/provenance.json: the command, versions, machine and dates of the regeneration."""
    import json
    from ..workbook.committed import provenance
    command = "python -m helpers.spikes.asker_state --seeds " + ",".join(map(str, seeds))
    command += " --from-scratch" if from_scratch else ""
    command += f" --units {units}" if units != SCRATCH_UNITS else ""
    command += " --remedies " + ",".join(remedies) if remedies else ""
    files = sorted(p.name for p in Path(out).glob("*.npz"))
    info = provenance(command, started=started, finished=finished, rows=len(files), workers=workers, runs=files,
                      data=DATA, variants=VARIANTS, remedies=REMEDIES, spike_rule=SPIKE_RULE,
                      target_loss=TARGET_LOSS, hold_steps=HOLD_STEPS, steps_b=STEPS_B, snapshot_b=SNAPSHOT_B,
                      branch_steps=BRANCH_STEPS, scratch_steps=SCRATCH_STEPS, units=units)
    (Path(out) / "provenance.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
