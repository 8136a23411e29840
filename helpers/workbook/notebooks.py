"""Run notebooks with papermill: used by `make run`, the sweeps and the tests.

The source notebook is never modified: papermill reads it and writes the
executed copy elsewhere. Findings go to `build_dir`/findings/ via the
WORKBOOK_BUILD_DIR environment variable, which the kernel inherits.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks in lesson order (NN_name.ipynb)."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def notebook_path(stem: str) -> Path:
    path = NOTEBOOK_DIR / f"{Path(stem).stem}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}")
    return path


@contextlib.contextmanager
def environ(**values: str):
    """Set environment variables for the duration of a with-block (a kernel inherits them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_POLL_SLICE_S = 1.0


def _patch_kernel_channel_polling() -> None:
    """Work around executions that hang on cells with ipywidgets (nbclient issue #312).

    nbclient waits for a cell's reply with one long (often unbounded) poll of
    the kernel's shell socket; with widgets sending comm traffic that poll can
    miss the reply and wait forever with the kernel idle. Polling in short
    slices re-checks the socket every second, which finds the waiting reply.
    """
    from queue import Empty
    from time import monotonic
    from jupyter_client.channels import AsyncZMQSocketChannel
    original = AsyncZMQSocketChannel.get_msg
    if getattr(original, "_sliced", False):
        return

    async def get_msg(self, timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                return await original(self, timeout=_POLL_SLICE_S if remaining is None
                                      else min(_POLL_SLICE_S, remaining))
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    get_msg._sliced = True
    AsyncZMQSocketChannel.get_msg = get_msg


@dataclass
class Execution:
    """The outcome of one papermill run."""
    notebook: str
    output: Path
    parameters: dict
    ok: bool
    seconds: float
    error: str = ""
    error_name: str = ""
    failed_cell: int | None = None  # index of the first cell whose output is an error
    extra: dict = field(default_factory=dict)


def execute(notebook: Path | str, output: Path, *, parameters: dict[str, Any] | None = None,
            build_dir: Path | None = None, timeout: int = 900, log_output: bool = False) -> Execution:
    """Execute `notebook` into `output` with papermill; never raises for a failing cell.

    build_dir: where the kernel's findings go (sets WORKBOOK_BUILD_DIR for the run).
    timeout: seconds any one cell may run before the run is stopped as failed.
    """
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    _patch_kernel_channel_polling()
    notebook = Path(notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    env = {"WORKBOOK_BUILD_DIR": str(Path(build_dir).resolve())} if build_dir else {}
    start = time.perf_counter()
    ok, err, ename = True, "", ""
    with environ(**env):
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters or {},
                                cwd=str(notebook.parent), progress_bar=False, log_output=log_output,
                                execution_timeout=timeout, kernel_name="python3")
        except pm.PapermillExecutionError as exc:
            ok, err, ename = False, f"{exc.ename}: {exc.evalue}", exc.ename
        except CellTimeoutError as exc:
            ok, err, ename = False, f"CellTimeoutError: {str(exc).splitlines()[0]}", "CellTimeoutError"
    seconds = time.perf_counter() - start
    failed_cell = None
    if not ok and output.exists():
        nb = nbformat.read(output, as_version=4)
        for i, cell in enumerate(nb.cells):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                failed_cell = i
                break
    return Execution(notebook.stem, output, dict(parameters or {}), ok, seconds, err, ename, failed_cell)


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def setup_cell_index(nb) -> int:
    """Index of the setup cell: the first code cell after the parameters (and injected) cells."""
    idx = None
    for i, cell in enumerate(nb.cells):
        tags = cell_tags(cell)
        if "parameters" in tags or "injected-parameters" in tags:
            idx = i
    if idx is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    for j in range(idx + 1, len(nb.cells)):
        if nb.cells[j].cell_type == "code":
            return j
    raise ValueError("no code cell after the parameters cell")
