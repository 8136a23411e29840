"""`make bench`: measure the workbook against its performance budgets.

    python -m benchmarks.run                 # everything (about 15 min on an idle 2-core machine)
    python -m benchmarks.run --only 01,03    # some notebooks (no whole-workbook row)
    python -m benchmarks.run --skip-setup --skip-overhead
    python -m benchmarks.run --strict        # exit 1 when any budget is not met

Every time a notebook records as a finding (names ending _s / _ms, or with
"seconds" or "latency") gets a row: judged against its budget where it has one
(widget medians ≤ 0.3 s, budgets.FINDING_TIME_BUDGETS), shown with "no budget"
otherwise. Check cells and tests never assert times; this is where they are judged.
The `python -m helpers.diagnose` CLI is timed through benchmarks/diagnose_cli.py
(~1M parameters, 10,000 examples) on whole runs, or with --diagnose-cli next to
--only; --skip-diagnose-cli skips it. Lesson 07's tagger at the asker's full size (7,000 × 4,096,
LSTM(64), batch 128) is timed over a few steps by benchmarks/full_scale_07.py, shown without a
budget (--full-scale with --only; --skip-full-scale skips it).

Prints the table and writes <build>/bench.md and <build>/bench.json
(<build> = $WORKBOOK_BUILD_DIR or build/). Executed notebooks and their
findings go to <build>/bench/, away from `make run`'s outputs.
Exit status: 0 when everything was measured (budgets not met are reported in
the table and the notes, with the likely reason); 1 when a notebook failed or
a measurement could not be taken; with --strict, also 1 when a budget is not met.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from . import budgets as B


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


from helpers.workbook.notebooks import stderr_to  # noqa: E402  (kernel chatter to a log file)

REPO = Path(__file__).resolve().parent.parent
DIAGNOSE_MODULE = REPO / "benchmarks" / "diagnose_cli.py"


def machine_info() -> dict:
    import psutil
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version
    versions = []
    for label, dists in (("TensorFlow", ("tensorflow-cpu", "tensorflow")), ("Keras", ("keras",)),
                         ("NumPy", ("numpy",)), ("JupyterLab", ("jupyterlab",)), ("papermill", ("papermill",))):
        for dist in dists:
            try:
                versions.append(f"{label} {version(dist)}")
                break
            except PackageNotFoundError:
                continue
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total,
            "platform": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "software": f"Python {platform.python_version()}, " + ", ".join(versions),
            "load_before": " / ".join(f"{x:.2f}" for x in os.getloadavg())}


def select_notebooks(only: str | None) -> list[Path]:
    from helpers.workbook.notebooks import notebook_paths
    paths = notebook_paths()
    if not only:
        return paths
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    return [p for p in paths if p.stem[:2] in wanted or p.stem in wanted]


def write_report(report: B.Report, root: Path) -> str:
    """Write bench.json and bench.md (also after each notebook, so a cut-short run leaves its numbers)."""
    from helpers.workbook.findings import atomic_write_text
    atomic_write_text(root / "bench.json", json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    text = report.markdown()
    atomic_write_text(root / "bench.md", text)
    return text


def time_rows(stem: str, findings: dict, others_cores: float | None = None) -> list[B.Row]:
    """One row per time the notebook recorded: widget medians (p95 beside them) and every other time."""
    rows = []
    widgets = B.widget_latencies(findings)
    for name, lat in widgets.items():
        p95 = lat.get("p95_s")
        if "median_s" in lat:
            rows.append(B.Row(f"widget '{name}' callback median", stem, lat["median_s"],
                              B.WIDGET_MEDIAN_SECONDS, "s",
                              f"p95 {B.format_quantity(p95, 's')}" if p95 is not None else "",
                              others_cores=others_cores))
    for name, value in B.recorded_times(findings).items():
        m = B.WIDGET_FINDING.match(name)
        if m and "median_s" in widgets.get(m.group("name"), {}):
            continue  # shown in the widget row above
        rows.append(B.Row(f"recorded time {name}", stem, value, B.time_budget(stem, name), B.time_unit(name),
                          "finding of the default run", others_cores=others_cores))
    return rows


def measure_diagnose_cli(report: B.Report, log=print) -> None:
    """Time the diagnosis CLI through benchmarks/diagnose_cli.py (a child process, watched for memory), on its
    two cases: the ~1M-parameter CNN and MobileNetV2 (alpha 0.35, 52 BN layers).

    If the script's last stdout line is JSON with "seconds" (and "peak_bytes"), those
    are its own measurements of the CLI alone; otherwise the child's wall time and peak are used.
    """
    from .measure import KernelWatcher
    import time
    cases = {"cnn": ("~1M parameters, 10,000 examples", B.DIAGNOSE_CLI_SECONDS, B.DIAGNOSE_CLI_PEAK_BYTES),
             "mobilenet": ("MobileNetV2 alpha 0.35, 32×32, 3,200 examples", B.DIAGNOSE_MOBILENET_SECONDS,
                           B.DIAGNOSE_MOBILENET_PEAK_BYTES)}
    for case, (what, seconds_budget, peak_budget) in cases.items():
        log(f"· python -m helpers.diagnose on {what} (benchmarks/diagnose_cli.py --case {case}) ...", flush=True)
        t0 = time.perf_counter()
        with KernelWatcher() as watch:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.diagnose_cli", "--case", case],
                                  capture_output=True, text=True, cwd=REPO)
        seconds, peak, detail = time.perf_counter() - t0, watch.peak_bytes or None, "wall time of the whole script"
        try:
            own = json.loads(proc.stdout.strip().splitlines()[-1])
            if isinstance(own, dict) and isinstance(own.get("seconds"), (int, float)):
                seconds, detail = float(own["seconds"]), "the CLI alone, as measured by benchmarks/diagnose_cli.py"
                peak = own.get("peak_bytes", peak)
                if own.get("parameters"):
                    detail += (f"; {own['parameters']:,} parameters, {own.get('examples', '?'):,} examples, "
                               f"{own.get('bn_layers')} BN layers")
        except (IndexError, json.JSONDecodeError):
            pass
        failed = proc.returncode != 0
        if failed:
            detail = f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-200:]}"
        report.rows.append(B.Row(f"diagnose CLI wall time ({what})", "helpers.diagnose",
                                 seconds, seconds_budget, "s", detail, failed=failed, others_cores=watch.others_cores))
        report.rows.append(B.Row(f"diagnose CLI peak memory ({case})", "helpers.diagnose", peak, peak_budget,
                                 "bytes", failed=failed, others_cores=watch.others_cores))


def measure_full_scale(report: B.Report, log=print) -> None:
    """Lesson 07's model at the asker's size (benchmarks/full_scale_07.py, a child process): rows without budgets."""
    from .measure import KernelWatcher
    log("· lesson 07's tagger at full size, a few training steps (benchmarks/full_scale_07.py) ...", flush=True)
    with KernelWatcher() as watch:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.full_scale_07"], capture_output=True, text=True,
                              cwd=REPO)
    try:
        own = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        report.rows.append(B.Row("lesson 07 at full size: one training step", "07_loss_spikes_under_adam", None,
                                 None, "s", (proc.stderr or proc.stdout).strip()[-200:], failed=True))
        return
    subject = "07_loss_spikes_under_adam"
    detail = f"{own['shape']}; others busy {watch.others_cores:.1f} cores"
    report.rows.append(B.Row(f"full size: one training step (median of {own['steps_timed']}, after a "
                             f"{own['first_step_s']:.1f} s first step)", subject, own["step_median_s"], None, "s",
                             detail, others_cores=watch.others_cores))
    report.rows.append(B.Row(f"full size: one epoch ({own['steps_per_epoch']} steps at that median)", subject,
                             own["epoch_s"], None, "s", detail, others_cores=watch.others_cores))
    report.rows.append(B.Row("full size: peak memory of the process", subject, own["peak_bytes"], None, "bytes",
                             detail, others_cores=watch.others_cores))


def measure_notebooks(paths, out: Path, setup_repeats: int, skip_setup: bool, report: B.Report,
                      log=print) -> list:
    from .measure import KernelWatcher, run_notebook, setup_time
    runs = []
    for path in paths:
        log(f"· {path.stem}: papermill run with default parameters ...", flush=True)
        nb_run = run_notebook(path, out)
        runs.append(nb_run)
        budget = B.notebook_budget_s(path.stem)
        detail = f"others busy {nb_run.others_cores:.1f} cores" + ("" if nb_run.ok else f"; {nb_run.error[:160]}")
        report.rows.append(B.Row("wall time (papermill, defaults)", path.stem, nb_run.seconds, budget, "s",
                                 detail, failed=not nb_run.ok, others_cores=nb_run.others_cores))
        report.rows.append(B.Row("peak memory, kernel + its children at once", path.stem, nb_run.peak_bytes or None,
                                 B.KERNEL_PEAK_BYTES, "bytes", others_cores=nb_run.others_cores))
        report.rows.extend(time_rows(path.stem, nb_run.findings, nb_run.others_cores))
        entry = {"ok": nb_run.ok, "seconds": nb_run.seconds, "peak_bytes": nb_run.peak_bytes,
                 "others_cores": nb_run.others_cores, "error": nb_run.error,
                 "widgets": B.widget_latencies(nb_run.findings)}
        if not skip_setup:
            log(f"· {path.stem}: fresh kernel to end of setup cell, {setup_repeats} times ...", flush=True)
            with KernelWatcher() as watch:
                timing = setup_time(path, out / "setup-runs", setup_repeats)
            report.rows.append(B.Row(f"fresh kernel → end of setup cell (median of {setup_repeats})", path.stem,
                                     None if timing.error else timing.median_s, B.SETUP_SECONDS, "s",
                                     timing.error or f"kernel start {timing.kernel_start_median_s:.1f} s + "
                                                     f"cells {timing.cells_median_s:.1f} s; "
                                                     f"others busy {watch.others_cores:.1f} cores",
                                     failed=bool(timing.error), others_cores=watch.others_cores))
            entry["setup"] = timing.__dict__
        report.notebooks[path.stem] = entry
        report.finished = f"(in progress: {len(runs)} of {len(paths)} notebooks)"
        write_report(report, out.parent)
    return runs


def measure_overhead(runs: int, epochs: int, report: B.Report, log=print) -> None:
    log(f"· train() vs bare model.fit, {runs} runs of {epochs} epochs each ...", flush=True)
    from .measure import KernelWatcher
    with KernelWatcher() as watch:  # the overhead process is a child like a kernel
        proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--runs", str(runs), "--epochs",
                               str(epochs)], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        report.rows.append(B.Row("train() / bare fit, ratio of medians", "helpers.training", None,
                                 B.TRAIN_OVERHEAD_RATIO, "ratio", proc.stderr.strip()[-200:], failed=True))
        return
    result["others_cores"] = watch.others_cores
    report.overhead = result
    report.rows.append(B.Row(f"train() / bare fit, ratio of medians of {runs}", "helpers.training",
                             result["ratio"], B.TRAIN_OVERHEAD_RATIO, "ratio",
                             f"{result['helper_median_s']:.2f} s vs {result['bare_median_s']:.2f} s, "
                             f"{result['epochs']} epochs of {result['samples']} digits; others busy {watch.others_cores:.1f} cores",
                             others_cores=watch.others_cores))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Measure the workbook against its budgets.")
    parser.add_argument("--only", help="comma-separated lesson numbers or stems, e.g. 01,03")
    parser.add_argument("--setup-repeats", type=int, default=3)
    parser.add_argument("--overhead-runs", type=int, default=5)
    parser.add_argument("--overhead-epochs", type=int, default=5)
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--diagnose-cli", action="store_true",
                        help="time the diagnosis CLI even with --only (it runs by default on whole runs)")
    parser.add_argument("--skip-diagnose-cli", action="store_true")
    parser.add_argument("--full-scale", action="store_true",
                        help="time lesson 07's tagger at the asker's full size even with --only (default on whole runs)")
    parser.add_argument("--skip-full-scale", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget is not met")
    args = parser.parse_args(argv)

    from helpers.workbook.findings import build_dir
    root = build_dir()
    out = root / "bench"
    report = B.Report(machine=machine_info(), started=_now())
    print(f"Benchmark on {report.machine['cpu']} ({report.machine['cores']} cores), "
          f"load average {report.machine['load_before']}", flush=True)

    paths = [] if args.skip_notebooks else select_notebooks(args.only)
    print(f"(kernel start-up messages go to {out / 'stderr.log'})", flush=True)
    with stderr_to(out / "stderr.log"):
        runs = measure_notebooks(paths, out, args.setup_repeats, args.skip_setup, report) if paths else []
    if runs and not args.only:
        total = sum(r.seconds for r in runs)
        report.rows.append(B.Row(f"whole workbook wall time ({len(runs)} notebooks)", "all", total,
                                 B.WORKBOOK_SECONDS, "s", failed=not all(r.ok for r in runs)))
    if not args.skip_overhead:
        with stderr_to(out / "stderr.log"):
            measure_overhead(args.overhead_runs, args.overhead_epochs, report)

    want_diagnose = (args.diagnose_cli or not args.only) and not args.skip_diagnose_cli
    if want_diagnose and DIAGNOSE_MODULE.exists():
        with stderr_to(out / "stderr.log"):
            measure_diagnose_cli(report)
    elif want_diagnose:
        report.notes.append("benchmarks/diagnose_cli.py does not exist yet: the diagnosis CLI was not timed.")

    if (args.full_scale or not args.only) and not args.skip_full_scale:
        with stderr_to(out / "stderr.log"):
            measure_full_scale(report)

    others = [r.others_cores for r in runs if r.others_cores == r.others_cores]
    report.machine["others_cores"] = statistics.mean(others) if others else float("nan")
    report.machine["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    report.finished = _now()
    for row in report.rows:
        if row.others_cores is None and row.subject == "helpers.training":
            row.others_cores = report.overhead.get("others_cores")
    report.notes = [B.why_over(r, report.machine["cores"]) for r in B.not_met(report.rows)] + report.notes
    if args.only:
        report.notes.append(f"Partial run (--only {args.only}): no whole-workbook row.")

    text = write_report(report, root)
    print()
    print(text)
    print(f"written: {root / 'bench.md'}, {root / 'bench.json'}")
    failed = any(r.verdict == B.FAILED for r in report.rows)
    over = any(r.verdict == B.OVER for r in report.rows)
    return 1 if failed or (args.strict and over) else 0


if __name__ == "__main__":
    sys.exit(main())
