"""The measurements behind `make bench`.

* run_notebook(): one papermill run with default parameters, its wall time,
  the peak resident memory of the kernel's process tree (Linux VmHWM, the
  kernel's own high-water mark, so short spikes between polls are not missed;
  sampled RSS elsewhere), and how many CPU cores other processes kept busy
  meanwhile (the contention behind the number).
* setup_time(): a fresh kernel per repeat, executing the notebook up to the end
  of its setup cell with nbclient; the median over repeats.
* Training-helper overhead lives in benchmarks.overhead (run in its own process).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.workbook.notebooks import environ, venv_kernel


def _vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set size of a process from /proc (Linux), else None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    import psutil
    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


class KernelWatcher:
    """Poll this process's descendants (the kernel papermill starts) in a thread.

    peak_bytes: peak memory of the kernel with its child processes: the largest
      sum of the resident memory of the descendants alive at one poll, or the
      largest single process's own peak (VmHWM, which catches spikes between
      polls), whichever is larger. (Summing every process's peak would count
      children that never ran at the same time.)
    own_cpu_s: CPU seconds those descendants used (last value seen per process).
    others_cores: average cores busy with work that is neither the kernel nor
    this process, over the watched interval.
    """

    def __init__(self, interval_s: float = 0.2):
        import psutil
        self.interval_s = interval_s
        self._me = psutil.Process(os.getpid())
        self._peak: dict[int, int] = {}
        self._together_peak = 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_bytes = 0
        self.own_cpu_s = 0.0
        self.others_cores = float("nan")
        self.seconds = 0.0

    def _poll(self) -> None:
        import psutil
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        together = 0
        for child in children:
            try:
                together += child.memory_info().rss
                hwm = _vm_hwm_bytes(child.pid)
                if hwm is None:
                    hwm = child.memory_info().rss
                self._peak[child.pid] = max(self._peak.get(child.pid, 0), hwm)
                t = child.cpu_times()
                self._cpu[child.pid] = t.user + t.system + getattr(t, "children_user", 0) + getattr(
                    t, "children_system", 0)
            except psutil.Error:
                continue
        self._together_peak = max(self._together_peak, together)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "KernelWatcher":
        self._t0 = time.perf_counter()
        self._busy0 = _busy_cpu_seconds()
        self._me_cpu0 = sum(self._me.cpu_times()[:2])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._t0
        self.peak_bytes = max([self._together_peak, *self._peak.values()])
        self.own_cpu_s = sum(self._cpu.values())
        busy = _busy_cpu_seconds() - self._busy0
        mine = sum(self._me.cpu_times()[:2]) - self._me_cpu0
        if self.seconds > 0:
            self.others_cores = max(0.0, (busy - mine - self.own_cpu_s) / self.seconds)


@dataclass
class NotebookRun:
    stem: str
    ok: bool
    seconds: float
    peak_bytes: int
    others_cores: float
    error: str = ""
    findings: dict = field(default_factory=dict)


def run_notebook(path: Path, out_dir: Path) -> NotebookRun:
    """Execute `path` with default parameters under papermill; findings go to out_dir/findings."""
    from helpers.workbook.findings import load_findings
    from helpers.workbook.notebooks import execute
    with KernelWatcher() as watch:
        result = execute(path, out_dir / "notebooks" / path.name, build_dir=out_dir)
    findings = {}
    with contextlib.suppress(OSError, ValueError):
        findings = load_findings(path.stem, out_dir)["findings"]
    error = "" if result.ok else f"cell {result.failed_cell}: {result.error}"
    return NotebookRun(path.stem, result.ok, result.seconds, watch.peak_bytes, watch.others_cores,
                       error, findings)


@dataclass
class SetupTiming:
    """Seconds from asking for a fresh kernel to the end of the setup cell (median of repeats)."""
    median_s: float
    kernel_start_median_s: float
    cells_median_s: float
    repeats: list = field(default_factory=list)
    error: str = ""


def setup_time(path: Path, build_dir: Path, repeats: int = 3) -> SetupTiming:
    """Start a fresh kernel `repeats` times and run the notebook up to its setup cell.

    Each repeat: nbclient starts a new kernel (timed), then executes every cell
    up to and including the setup cell with default parameters (timed), then
    the kernel is shut down. Returns the medians.
    """
    import nbformat
    from nbclient import NotebookClient
    from helpers.workbook.notebooks import setup_cell_index
    nb = nbformat.read(path, as_version=4)
    last = setup_cell_index(nb)
    nb.cells = nb.cells[: last + 1]
    totals, starts, cells = [], [], []
    with environ(WORKBOOK_BUILD_DIR=str(Path(build_dir).resolve())), venv_kernel() as kernel_name:
        for _ in range(repeats):
            client = NotebookClient(nb, timeout=600, kernel_name=kernel_name,
                                    resources={"metadata": {"path": str(path.parent)}})
            t0 = time.perf_counter()
            try:
                with client.setup_kernel():
                    t1 = time.perf_counter()
                    for index, cell in enumerate(nb.cells):
                        client.execute_cell(cell, index)
                    t2 = time.perf_counter()
            except Exception as exc:  # a failing setup cell is a finding of its own
                return SetupTiming(float("nan"), float("nan"), float("nan"), error=f"{type(exc).__name__}: {exc}"[:300])
            totals.append(t2 - t0)
            starts.append(t1 - t0)
            cells.append(t2 - t1)
    return SetupTiming(statistics.median(totals), statistics.median(starts), statistics.median(cells),
                       repeats=[round(t, 3) for t in totals])
