"""Fast tests of the benchmark's pure parts: budgets, verdicts, notes, the table."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

# benchmarks/ is a top-level package beside helpers/ (not installed): make it importable
# however pytest is started.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import budgets as B  # noqa: E402
from benchmarks.overhead import alternating_order  # noqa: E402


@pytest.mark.parametrize("stem, seconds", [
    ("00_start_here", 30.0), ("01_steps_epochs_and_batches", 90.0), ("02_x", 90.0), ("03_x", 90.0),
    ("04_batchnorm_running_statistics", 90.0), ("05_x", 150.0), ("06_x", 180.0), ("07_loss_spikes_under_adam", 180.0),
    ("08_diagnose_your_model", 60.0)])
def test_notebook_budgets_are_the_issues_budgets(stem, seconds):
    assert B.notebook_budget_s(stem) == seconds
    assert B.notebook_budget_s(f"/some/dir/{stem}.ipynb") == seconds


def test_unknown_lessons_have_no_budget():
    assert B.notebook_budget_s("09_new_lesson") is None
    assert B.notebook_budget_s("scratch") is None
    assert B.lesson_number("scratch") is None


def test_the_readme_states_the_budgets_the_benchmark_applies():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = " ".join(readme.split("## How fast it is")[1].split("### ")[0].split())  # line breaks as spaces
    for number, limit in B.NOTEBOOK_SECONDS.items():
        assert f"{number:02d} ≤ {limit:.0f} s" in section, f"lesson {number:02d}'s budget is not in the README"
    assert f"whole workbook ≤ {B.WORKBOOK_SECONDS / 60:.0f} min" in section
    assert f"≤ {B.KERNEL_PEAK_BYTES / 2**30:.0f} GiB" in section
    assert f"median ≤ {B.WIDGET_MEDIAN_SECONDS} s" in section and f"≤ {B.SETUP_SECONDS:.0f} s" in section
    assert f"≤ {B.TRAIN_OVERHEAD_RATIO:.2f}" in section and f"≤ {B.DIAGNOSE_CLI_SECONDS:.0f} s" in section


def test_verdicts_at_below_and_over_the_limit():
    assert B.Row("t", "01", 89.9, 90.0).verdict == B.OK
    assert B.Row("t", "01", 90.0, 90.0).verdict == B.OK  # "≤" includes the limit
    assert B.Row("t", "01", 90.1, 90.0).verdict == B.OVER
    assert B.Row("t", "07", 500.0, None).verdict == B.NO_BUDGET
    assert B.Row("t", "01", None, 90.0).verdict == B.FAILED
    assert B.Row("t", "01", float("nan"), 90.0).verdict == B.FAILED
    assert B.Row("t", "01", 10.0, 90.0, failed=True).verdict == B.FAILED  # a failed run never counts as ok


def test_widget_latencies_pair_median_and_p95_by_name():
    findings = {"widget_batch_choice_median_s": 0.12, "widget_batch_choice_p95_s": 0.2,
                "widget_bn_mode_median_s": 0.05, "widget_count": 3, "widget_flag_median_s": True,
                "accuracy": 0.9}
    assert B.widget_latencies(findings) == {"batch_choice": {"median_s": 0.12, "p95_s": 0.2},
                                            "bn_mode": {"median_s": 0.05}}
    assert B.widget_latencies({}) == {}


@pytest.mark.parametrize("value, unit, text", [
    (0.1234, "s", "0.123 s"), (12.34, "s", "12.3 s"), (125.0, "s", "2 min 05 s"), (720.0, "s", "12 min 00 s"),
    (512 * 2**20, "bytes", "512 MiB"), (3 * 2**30, "bytes", "3.00 GiB"), (1.034, "ratio", "1.034×"),
    (None, "s", "—"), (float("nan"), "s", "—")])
def test_quantities_print_in_human_units(value, unit, text):
    assert B.format_quantity(value, unit) == text


def test_markdown_table_has_one_line_per_row_and_marks_what_is_not_met():
    rows = [B.Row("wall time", "01_a", 60.0, 90.0), B.Row("wall time", "05_b", 200.0, 150.0),
            B.Row("peak memory", "05_b", 2**30, B.KERNEL_PEAK_BYTES, "bytes", detail="a|b")]
    table = B.markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count(" | ") == 5 for line in lines[2:])  # the escaped pipe does not add a column
    assert "**OVER**" in lines[3] and "**OVER**" not in lines[2]
    assert "≤ 1 min 30 s" not in table and "≤ 90.0 s" in lines[2]


def test_not_met_lists_over_and_failed_rows_only():
    rows = [B.Row("a", "x", 1.0, 2.0), B.Row("b", "x", 3.0, 2.0), B.Row("c", "x", None, 2.0),
            B.Row("d", "x", 9.0, None)]
    assert [r.measure for r in B.not_met(rows)] == ["b", "c"]


def test_notes_blame_contention_only_when_other_work_was_measured():
    busy = B.Row("wall time", "01_a", 120.0, 90.0, others_cores=1.5)
    idle = B.Row("wall time", "01_a", 120.0, 90.0, others_cores=0.1)
    unknown = B.Row("wall time", "01_a", 120.0, 90.0)
    assert "contention" in B.why_over(busy, cores=2) and "1.33×" in B.why_over(busy, cores=2)
    assert "contention" not in B.why_over(idle, cores=2) and "too heavy" in B.why_over(idle, cores=2)
    assert "not measured" in B.why_over(unknown, cores=2)
    failed = B.Row("wall time", "01_a", None, 90.0, detail="cell 4: ValueError", failed=True)
    assert "could not be measured" in B.why_over(failed, cores=2) and "ValueError" in B.why_over(failed, cores=2)


def test_report_round_trips_through_json_and_states_the_machine():
    report = B.Report(machine={"cpu": "Test CPU", "cores": 2, "memory_bytes": 8 * 2**30, "others_cores": 0.4,
                               "load_before": "0.1", "load_after": "0.2"},
                      rows=[B.Row("wall time", "01_a", 60.0, 90.0), B.Row("wall time", "02_b", 100.0, 90.0)],
                      notes=["02_b: over"], started="t0", finished="t1")
    doc = json.loads(json.dumps(report.as_dict()))
    assert [r["verdict"] for r in doc["rows"]] == ["ok", "OVER"]
    assert [r["subject"] for r in doc["not_met"]] == ["02_b"]
    text = report.markdown()
    assert "Test CPU, 2 cores" in text and "0.4 of 2 cores" in text
    assert "1 budget(s) not met" in text and "- 02_b: over" in text
    assert "Every budget met." in B.Report(machine={}, rows=[B.Row("a", "x", 1.0, 2.0)]).markdown()


def test_overhead_runs_alternate_so_drift_hits_both_paths():
    order = alternating_order(4)
    assert order == ["bare", "helper", "helper", "bare", "bare", "helper", "helper", "bare"]
    assert order.count("bare") == order.count("helper") == 4


def test_kernel_watcher_sees_a_child_process_peak_memory():
    pytest.importorskip("psutil")
    from benchmarks.measure import KernelWatcher
    grow = "b = bytearray(64 * 2**20); import time; time.sleep(0.6)"
    with KernelWatcher(interval_s=0.05) as watch:
        subprocess.run([sys.executable, "-c", grow], check=True)
        time.sleep(0.05)
    assert watch.peak_bytes >= 64 * 2**20, watch.peak_bytes
    assert not math.isnan(watch.others_cores), "contention is measured"


def test_every_recorded_time_is_a_row_judged_where_it_has_a_budget():
    from benchmarks.run import time_rows
    findings = {"widget_batch_median_s": 0.45, "widget_batch_p95_s": 0.6, "seconds_per_epoch_batch_1": 12.0,
                "latency_ms_per_window_median": 1.5, "widget_x_cpu_s": 0.2, "accuracy": 0.9,
                "variance_ratio_m2": 0.5, "flag_s": True}
    rows = {r.measure: r for r in time_rows("01_a", findings, others_cores=0.5)}
    assert set(rows) == {"widget 'batch' callback median", "recorded time seconds_per_epoch_batch_1",
                         "recorded time latency_ms_per_window_median", "recorded time widget_x_cpu_s"}
    widget = rows["widget 'batch' callback median"]
    assert widget.verdict == B.OVER and widget.limit == B.WIDGET_MEDIAN_SECONDS and "p95 0.600 s" in widget.detail
    assert rows["recorded time latency_ms_per_window_median"].unit == "ms"
    assert rows["recorded time seconds_per_epoch_batch_1"].verdict == B.NO_BUDGET
    assert all(r.others_cores == 0.5 for r in rows.values())


def test_a_time_budget_table_entry_judges_a_recorded_time(monkeypatch):
    monkeypatch.setitem(B.FINDING_TIME_BUDGETS, (3, r"latency_ms_per_window_\w+"), 5.0)
    assert B.time_budget("03_x", "latency_ms_per_window_median") == 5.0
    assert B.time_budget("04_x", "latency_ms_per_window_median") is None
    assert B.time_budget("04_x", "widget_a_median_s") == B.WIDGET_MEDIAN_SECONDS
    assert B.time_budget("04_x", "widget_a_p95_s") is None


def test_strict_makes_a_missed_budget_exit_non_zero(tmp_path, monkeypatch, capsys):
    import benchmarks.run as run
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(run, "measure_overhead", lambda runs, epochs, report, log=print: report.rows.append(
        B.Row("train() / bare fit", "helpers.training", 1.5, B.TRAIN_OVERHEAD_RATIO, "ratio")))
    args = ["--skip-notebooks", "--skip-diagnose-cli", "--skip-full-scale"]
    assert run.main(args) == 0, "without --strict a missed budget is reported, not fatal"
    assert run.main(args + ["--strict"]) == 1
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert [r["verdict"] for r in doc["not_met"]] == ["OVER"]
    monkeypatch.setattr(run, "measure_overhead", lambda runs, epochs, report, log=print: report.rows.append(
        B.Row("train() / bare fit", "helpers.training", 1.0, B.TRAIN_OVERHEAD_RATIO, "ratio")))
    assert run.main(args + ["--strict"]) == 0


def test_the_diagnose_cli_row_uses_the_scripts_own_measurement(monkeypatch):
    import benchmarks.run as run

    class Done:
        returncode, stderr = 0, ""
        stdout = "progress...\n" + json.dumps({"seconds": 42.0, "peak_bytes": 2**30, "parameters": 1_070_000,
                                                "examples": 10_000})
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: Done())
    report = B.Report(machine={})
    run.measure_diagnose_cli(report, log=lambda *a, **k: None)
    wall, memory, wall_mobilenet, memory_mobilenet = report.rows
    assert (wall.value, wall.limit, wall.verdict) == (42.0, B.DIAGNOSE_CLI_SECONDS, B.OK)
    assert (memory.value, memory.verdict) == (2**30, B.OK)
    assert "1,070,000 parameters, 10,000 examples" in wall.detail
    # the MobileNetV2 case has its own, tighter budget: the same 42 s is over it
    assert (wall_mobilenet.limit, wall_mobilenet.verdict) == (B.DIAGNOSE_MOBILENET_SECONDS, B.OVER)
    assert memory_mobilenet.verdict == B.OK


def test_a_failing_diagnose_cli_is_a_failed_row(monkeypatch):
    import benchmarks.run as run

    class Failed:
        returncode, stdout, stderr = 1, json.dumps({"seconds": 3.0, "returncode": 2}), "exit 2: bad model"
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: Failed())
    report = B.Report(machine={})
    run.measure_diagnose_cli(report, log=lambda *a, **k: None)
    assert [r.verdict for r in report.rows] == [B.FAILED] * 4 and "bad model" in report.rows[0].detail


def test_the_full_scale_rows_are_the_scripts_measurements_without_budgets(monkeypatch):
    import benchmarks.run as run

    class Done:
        returncode, stderr = 0, ""
        stdout = json.dumps({"first_step_s": 9.0, "step_median_s": 4.0, "steps_timed": 3, "steps_per_epoch": 54,
                             "epoch_s": 216.0, "peak_bytes": 3 * 2**30, "shape": "7,000 x 4,096"})
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: Done())
    report = B.Report(machine={})
    run.measure_full_scale(report, log=lambda *a, **k: None)
    step, epoch, memory = report.rows
    assert (step.value, epoch.value, memory.value) == (4.0, 216.0, 3 * 2**30)
    assert {r.verdict for r in report.rows} == {B.NO_BUDGET} and "54 steps" in epoch.measure

    class Failed:
        returncode, stdout, stderr = 1, "", "ResourceExhaustedError: out of memory"
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: Failed())
    report = B.Report(machine={})
    run.measure_full_scale(report, log=lambda *a, **k: None)
    assert [r.verdict for r in report.rows] == [B.FAILED] and "out of memory" in report.rows[0].detail


def test_the_full_scale_script_times_the_lessons_loop_on_a_small_shape(monkeypatch):
    from benchmarks import full_scale_07 as fs
    monkeypatch.setattr(fs, "TIMESTEPS", 32)
    monkeypatch.setattr(fs, "UNITS", 4)
    monkeypatch.setattr(fs, "BATCH", 8)
    out = fs.measure(steps=2)
    assert out["steps_timed"] == 2 and len(out["step_times_s"]) == 2
    assert out["steps_per_epoch"] == 7000 // 8
    assert out["epoch_s"] == pytest.approx(out["steps_per_epoch"] * out["step_median_s"])
    assert out["peak_bytes"] > 0


def test_the_full_scale_script_refuses_a_bad_step_count(capsys):
    from benchmarks import full_scale_07 as fs
    with pytest.raises(SystemExit) as exc:
        fs.main(["--steps", "0"])
    assert exc.value.code == 2 and "--steps" in capsys.readouterr().err
