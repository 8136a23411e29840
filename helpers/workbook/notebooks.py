"""Run notebooks with papermill: used by `make run`, the sweeps and the tests.

The source notebook is never modified: papermill reads it and writes the
executed copy elsewhere. Findings go to `build_dir`/findings/ via the
WORKBOOK_BUILD_DIR environment variable, which the kernel inherits.

The kernel is always this interpreter (the .venv's): `execute` puts a
kernelspec named "python3" that points at sys.executable first on the
kernelspec search path, so a user's own `python3` kernelspec (another Python,
without the workbook's packages) is never picked up. A kernel that dies before
answering its first message is replaced by a new one (KERNEL_START_ATTEMPTS).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .findings import REPO_ROOT  # one definition of the repository root

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks in lesson order (NN_name.ipynb)."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def notebook_path(stem: str) -> Path:
    path = NOTEBOOK_DIR / f"{Path(stem).stem}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}")
    return path


def declared_parameters(notebook: Path | str) -> dict[str, Any]:
    """{name: default} of the notebook's cell tagged `parameters` (plain `name = literal` lines).

    Read statically (no kernel), so a sweep or `make run` can refuse a name the
    notebook does not have before anything runs.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            names = {}
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            try:
                                names[target.id] = ast.literal_eval(node.value)
                            except ValueError:
                                names[target.id] = None
            return names
    raise ValueError(f"{Path(notebook).name} has no cell tagged 'parameters'")


def check_notebook_parameters(notebook: Path | str, names) -> None:
    """Raise ParameterError (listing the allowed names) for any of `names` the notebook does not declare."""
    from .environment import check_parameter_names as check_names
    check_names(list(names), list(declared_parameters(notebook)), Path(notebook).stem)


KERNEL_NAME = "python3"


def kernelspec_dir() -> Path:
    """A folder holding a kernelspec "python3" that runs this interpreter's ipykernel.

    Kept under the environment (sys.prefix/share/workbook-jupyter) when that is
    writable, else in a per-user temporary folder. Rewritten when it points elsewhere.
    """
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 (workbook: {sys.prefix})", "language": "python",
            "metadata": {"debugger": True}}
    text = json.dumps(spec, indent=1) + "\n"
    candidates = [Path(sys.prefix) / "share" / "workbook-jupyter",
                  Path(tempfile.gettempdir()) / f"workbook-jupyter-{os.getuid() if hasattr(os, 'getuid') else 0}"
                  / hashlib.sha256(sys.executable.encode()).hexdigest()[:12]]
    for root in candidates:
        target = root / "kernels" / KERNEL_NAME / "kernel.json"
        try:
            if not target.exists() or target.read_text() != text:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(text)
                os.replace(tmp, target)
            return root
        except OSError:
            continue
    raise OSError("cannot write a kernelspec for this interpreter anywhere")


@contextlib.contextmanager
def venv_kernel():
    """Within the block, the kernelspec "python3" resolves to this interpreter (sys.executable).

    JUPYTER_PATH is searched before the user's and the system's kernelspec folders.
    """
    root = str(kernelspec_dir())
    old = os.environ.get("JUPYTER_PATH")
    parts = [root] + ([p for p in old.split(os.pathsep) if p and p != root] if old else [])
    with environ(JUPYTER_PATH=os.pathsep.join(parts)):
        yield KERNEL_NAME


@contextlib.contextmanager
def stderr_to(path: Path):
    """Send file descriptor 2 (ours and that of the kernels we start) to `path` meanwhile.

    Kernels print start-up chatter there (IPKernelApp's "running over TCP
    without encryption" warning, papermill's own warnings); the terminal keeps
    only what the caller prints to stdout.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield path
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


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
    get_msg._original = original      # jupyter_client's own, for the tests that show the stall
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


def _first_line(text: str) -> str:
    lines = [l for l in str(text).strip().splitlines() if l.strip()]
    return lines[0] if lines else ""


def execute(notebook: Path | str, output: Path, *, parameters: dict[str, Any] | None = None,
            build_dir: Path | None = None, timeout: int = 900, log_output: bool = False,
            cwd: Path | None = None) -> Execution:
    """Execute `notebook` into `output` with papermill; never raises for a failed run.

    Whatever stops the run is reported in the Execution (ok False, error, error_name):
    an error in a cell, a cell timeout, a kernel that dies (out of memory, os._exit),
    a kernel that cannot be started, a notebook that cannot be read. Only Ctrl-C
    (KeyboardInterrupt) and SystemExit propagate.
    build_dir: where the kernel's findings go (sets WORKBOOK_BUILD_DIR for the run).
    timeout: seconds any one cell may run before the run is stopped as failed.
    cwd: the kernel's working directory (default: the notebook's folder).
    """
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    _patch_kernel_channel_polling()
    notebook = Path(notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    env = {"WORKBOOK_BUILD_DIR": str(Path(build_dir).resolve())} if build_dir else {}
    start = time.perf_counter()
    failed_starts: list[str] = []
    with environ(**env), venv_kernel() as kernel_name:
        while True:
            ok, err, ename = True, "", ""
            try:
                pm.execute_notebook(str(notebook), str(output), parameters=parameters or {},
                                    cwd=str(cwd or notebook.parent), progress_bar=False, log_output=log_output,
                                    execution_timeout=timeout, kernel_name=kernel_name)
            except pm.PapermillExecutionError as exc:
                ok, err, ename = False, f"{exc.ename}: {exc.evalue}", exc.ename
            except CellTimeoutError as exc:
                ok, err, ename = False, f"CellTimeoutError: {_first_line(exc)}", "CellTimeoutError"
            except DeadKernelError as exc:
                ok, ename = False, "DeadKernelError"
                err = f"DeadKernelError: the kernel died (out of memory, os._exit, a crash): {_first_line(exc)}"
            except Exception as exc:  # no kernel, unreadable notebook, ...: reported, never raised
                ok, ename = False, type(exc).__name__
                err = f"{ename}: {_first_line(exc) or repr(exc)}"
            if ok or not _kernel_never_started(err, output) or len(failed_starts) + 1 >= KERNEL_START_ATTEMPTS:
                break
            failed_starts.append(err)           # nothing ran: start the whole run again on a new kernel
            time.sleep(KERNEL_START_PAUSE_S)
    if failed_starts and not ok:
        err = f"{err} (the kernel failed to start {len(failed_starts) + 1} times)"
    seconds = time.perf_counter() - start
    failed_cell = None
    if not ok and output.exists():
        try:
            nb = nbformat.read(output, as_version=4)
        except Exception:  # the executed copy is itself unreadable (half-written)
            nb = None
        for i, cell in enumerate(nb.cells if nb is not None else []):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                failed_cell = i
                break
        if failed_cell is None and nb is not None and ename == "DeadKernelError":
            # the cell that was running when the kernel died: the last one papermill started
            started = _started_cells(nb)
            failed_cell = started[-1] if started else None
    extra = {"failed_kernel_starts": failed_starts} if failed_starts else {}
    return Execution(notebook.stem, output, dict(parameters or {}), ok, seconds, err, ename, failed_cell, extra)


# A kernel can die before it answers its first message: its ports, picked free by jupyter_client,
# were taken by another process before it bound them (jupyter/jupyter_client#154), which happens
# when several kernels and a browser start at once. No cell has run then, so the run is started
# again on a new kernel, at most this many times in all; a kernel that never starts is reported.
KERNEL_START_ATTEMPTS = 3
KERNEL_START_PAUSE_S = 1.0
_KERNEL_START_ERRORS = ("Kernel died before replying to kernel_info", "Kernel didn't respond")


def is_kernel_start_error(error: str) -> bool:
    """Whether `error` is jupyter_client's report of a kernel that did not answer its first message."""
    return any(marker in error for marker in _KERNEL_START_ERRORS)


def retrying_kernel_start(start):
    """`start` (jupyter_client's start_new_kernel, as nbval calls it) made again on a new kernel,
    up to KERNEL_START_ATTEMPTS times in all, when the kernel failed to start: nothing has run then."""
    @functools.wraps(start)
    def start_new_kernel(*args, **kwargs):
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                return start(*args, **kwargs)
            except RuntimeError as exc:
                if attempt == KERNEL_START_ATTEMPTS or not is_kernel_start_error(str(exc)):
                    raise
                time.sleep(KERNEL_START_PAUSE_S)
    start_new_kernel._retrying = True
    return start_new_kernel


def _kernel_never_started(error: str, output: Path) -> bool:
    """Whether `error` is a kernel that failed to start, with no cell of `output` started."""
    if not is_kernel_start_error(error):
        return False
    import nbformat
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:       # papermill had not written its copy yet: nothing ran
        return True
    return not _started_cells(nb)


def _started_cells(nb) -> list[int]:
    """Indices of the cells papermill started (it records a start_time in their metadata)."""
    return [i for i, cell in enumerate(nb.cells) if cell.get("metadata", {}).get("papermill", {}).get("start_time")]


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
