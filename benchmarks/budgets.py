"""The workbook's performance budgets and the table that compares measurements to them.

Pure functions only (no timing, no notebooks): unit-tested in
tests/unit/test_benchmarks.py.

A Row is one measured quantity against one budget:

    Row("wall time", "01_steps_epochs_and_batches", 63.2, 90.0, unit="s")
    -> verdict "ok"; Row(..., 95.0, 90.0) -> "OVER"
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Wall time of one notebook under papermill with default parameters, by lesson number
# (02: 90 s, issue 14, with three of its MNIST-1D runs read from data/mnist1d_runs.csv; 07: issue 27; 08: issue 16).
NOTEBOOK_SECONDS = {0: 30.0, 1: 90.0, 2: 90.0, 3: 90.0, 4: 90.0, 5: 150.0, 6: 180.0, 7: 180.0, 8: 60.0}
WORKBOOK_SECONDS = 12 * 60.0
KERNEL_PEAK_BYTES = 3 * 2**30
SETUP_SECONDS = 10.0
WIDGET_MEDIAN_SECONDS = 0.3
TRAIN_OVERHEAD_RATIO = 1.10
# `python -m helpers.diagnose` on a model of about 1M parameters and 10,000 examples (issue 16).
DIAGNOSE_CLI_SECONDS = 60.0
DIAGNOSE_CLI_PEAK_BYTES = 3 * 2**30
# ... and on MobileNetV2 (alpha 0.35, 32×32, 3,200 training images, 52 BN layers; issue 30).
DIAGNOSE_MOBILENET_SECONDS = 30.0
DIAGNOSE_MOBILENET_PEAK_BYTES = 3 * 2**30

OK, OVER, FAILED, NO_BUDGET, INFO = "ok", "OVER", "FAILED", "no budget", "info"

WIDGET_FINDING = re.compile(r"^widget_(?P<name>\w+?)_(?P<stat>median|p95)_s$")
# Findings that are times, by the workbook's naming convention: *_s, *_ms, *seconds*, *_ms_*, *latency*.
TIME_FINDING = re.compile(r"(_s$|_ms$|_ms_|^ms_|seconds|latency|_minutes?$|_min$)")
# Budgets of recorded times other than the widget medians: (lesson number, finding-name regex) -> limit in
# the finding's own unit. A recorded time without an entry is reported with "no budget".
FINDING_TIME_BUDGETS: dict[tuple[int, str], float] = {}


def lesson_number(stem: str) -> int | None:
    """01_steps_epochs_and_batches -> 1; a stem without a two-digit prefix -> None."""
    m = re.match(r"^(\d{2})_", Path(stem).stem)
    return int(m.group(1)) if m else None


def notebook_budget_s(stem: str) -> float | None:
    """The wall-time budget (seconds) of a notebook, None when the lesson has none."""
    number = lesson_number(stem)
    return NOTEBOOK_SECONDS.get(number) if number is not None else None


def widget_latencies(findings: dict) -> dict[str, dict[str, float]]:
    """{widget name: {"median_s": ..., "p95_s": ...}} from a notebook's findings.

    Reads the widget_<name>_median_s / widget_<name>_p95_s pairs every
    interactive section records; a name with only one of the two keeps it.
    """
    found: dict[str, dict[str, float]] = {}
    for key, value in findings.items():
        m = WIDGET_FINDING.match(key)
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            found.setdefault(m.group("name"), {})[f"{m.group('stat')}_s"] = float(value)
    return dict(sorted(found.items()))


def time_unit(name: str) -> str:
    """The unit a time finding is recorded in, from its name."""
    if re.search(r"(_ms$|_ms_|^ms_)", name):
        return "ms"
    if re.search(r"(_minutes?$|_min$)", name):
        return "min"
    return "s"


def recorded_times(findings: dict) -> dict[str, float]:
    """Every numeric finding whose name says it is a time (widget latencies included)."""
    return {k: float(v) for k, v in sorted(findings.items())
            if TIME_FINDING.search(k) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def time_budget(stem: str, finding: str) -> float | None:
    """The budget of a recorded time: the widget median budget, or an entry of FINDING_TIME_BUDGETS."""
    m = WIDGET_FINDING.match(finding)
    if m and m.group("stat") == "median":
        return WIDGET_MEDIAN_SECONDS
    number = lesson_number(stem)
    for (lesson, pattern), limit in FINDING_TIME_BUDGETS.items():
        if lesson == number and re.fullmatch(pattern, finding):
            return limit
    return None


@dataclass
class Row:
    """One measurement against one budget (limit None: no budget, shown for information)."""
    measure: str
    subject: str
    value: float | None
    limit: float | None
    unit: str = "s"
    detail: str = ""
    failed: bool = False  # the measurement could not be taken (e.g. the notebook raised)
    others_cores: float | None = None  # cores other processes kept busy while this was measured

    @property
    def verdict(self) -> str:
        if self.failed or self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return FAILED
        if self.limit is None:
            return NO_BUDGET
        return OK if self.value <= self.limit else OVER

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def format_quantity(value: float | None, unit: str) -> str:
    """Human units: seconds as 0.123 s / 12.3 s / 2 min 05 s, bytes as MiB/GiB, ratios plain."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        if value >= 120:
            minutes, seconds = divmod(round(value), 60)
            return f"{minutes} min {seconds:02d} s"
        return f"{value:.3f} s" if value < 1 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
    if unit == "ratio":
        return f"{value:.3f}×"
    return f"{value:g} {unit}".strip()


def format_budget(limit: float | None, unit: str) -> str:
    return "—" if limit is None else f"≤ {format_quantity(limit, unit)}"


def markdown_table(rows: list[Row]) -> str:
    """The benchmark table in Markdown (what bench.md and the terminal show)."""
    lines = ["| measure | notebook | measured | budget | verdict | detail |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"**{r.verdict}**" if r.verdict in (OVER, FAILED) else r.verdict
        cells = [r.measure, r.subject, format_quantity(r.value, r.unit), format_budget(r.limit, r.unit),
                 verdict, r.detail]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def not_met(rows: list[Row]) -> list[Row]:
    """Rows over budget or not measured."""
    return [r for r in rows if r.verdict in (OVER, FAILED)]


def why_over(row: Row, cores: int) -> str:
    """An honest one-line note on a row that is over budget or not measured.

    row.others_cores: average number of CPU cores that *other* processes kept
    busy while this was measured. Above a third of the machine, contention is
    named as the likely cause; otherwise the work itself is.
    """
    others_cores = row.others_cores
    if row.verdict == FAILED:
        return f"{row.subject}: {row.measure} could not be measured ({row.detail or 'see the log'})."
    excess = row.value / row.limit if row.limit else float("nan")
    text = f"{row.subject}: {row.measure} is {excess:.2f}× its budget"
    if others_cores is not None and others_cores == others_cores and cores and others_cores >= cores / 3:
        return (text + f"; other processes kept {others_cores:.1f} of {cores} cores busy meanwhile, "
                "so this is inflated by contention — re-measure on an idle machine before acting.")
    if others_cores is None or others_cores != others_cores:
        return text + "; contention was not measured for this row."
    return text + (f"; other processes kept only {others_cores:.1f} of {cores} cores busy, "
                   "so the work itself is too heavy for its budget.")


@dataclass
class Report:
    """Everything one benchmark run measured (written to bench.json)."""
    machine: dict
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    notebooks: dict = field(default_factory=dict)
    overhead: dict = field(default_factory=dict)
    started: str = ""
    finished: str = ""

    def as_dict(self) -> dict:
        return {"machine": self.machine, "started": self.started, "finished": self.finished,
                "rows": [r.as_dict() for r in self.rows], "not_met": [r.as_dict() for r in not_met(self.rows)],
                "notes": self.notes, "notebooks": self.notebooks, "overhead": self.overhead}

    def markdown(self) -> str:
        m = self.machine
        head = [f"# Workbook benchmark ({self.started} → {self.finished})", "",
                f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                f"{format_quantity(m.get('memory_bytes'), 'bytes')} RAM, {m.get('platform', '')}; "
                f"{m.get('software', '')}."]
        others = m.get("others_cores")
        if isinstance(others, (int, float)) and others == others:
            head.append(f"Other processes kept on average {others:.1f} of {m.get('cores', '?')} cores busy "
                        "during the notebook runs (the contention behind these numbers).")
        head += [f"Load average {m.get('load_before', '?')} before, {m.get('load_after', '?')} after.", ""]
        body = [markdown_table(self.rows), ""]
        missed = not_met(self.rows)
        verdict = ["Every budget met." if not missed else f"{len(missed)} budget(s) not met; see the notes."]
        notes = (["", "Notes:"] + [f"- {n}" for n in self.notes]) if self.notes else []
        return "\n".join(head + body + verdict + notes) + "\n"
