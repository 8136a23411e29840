"""Execute every notebook into build/, render HTML, write the findings report.

    python -m helpers.workbook.run_all                 # what `make run` calls
    python -m helpers.workbook.run_all 01 03           # only notebooks whose names start with these
    python -m helpers.workbook.run_all -p seed 1       # every notebook with seed = 1

The promises, each unit-tested in tests/unit/test_run_all.py:
* A notebook that fails for any reason (a cell error, a timeout, a kernel that
  dies or cannot start, an unreadable notebook, an HTML rendering error) is
  reported as failed with its error; the others still run; the exit status is 1.
* Work happens in a staging folder `.build-staging-<pid>` beside build/;
  build/ is replaced only when the run finishes, by an atomic exchange of the
  two folders where the system offers one (Linux renameat2), else by two
  renames. There is never a moment without a complete build/: folders of
  build/ that a run does not produce (sweeps, screenshots, benchmark results,
  test runs) are hard-linked into the staging folder before the swap. If a run
  is killed between the two renames, the next run restores build/ and removes
  every leftover `.build-*` folder (`make clean` removes them too).
* One run at a time: a second concurrent run stops at once with a message
  naming the first (a lock on `.build-lock`).
* Kernels are this interpreter's (see notebooks.venv_kernel).
* The terminal shows one line per notebook and a summary; the kernels'
  start-up chatter and papermill's warnings go to build/run.log.
* A parameter name that a notebook does not declare is refused before
  anything runs (exit 2), naming the allowed names; bad values stop that
  notebook in its setup cell, like any papermill run.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import html
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .findings import atomic_write_text, findings_path
from .environment import check_parameter_names as check_names
from .notebooks import REPO_ROOT, Execution, declared_parameters, execute, notebook_paths, stderr_to
from .params import ParameterError
from .tables import Table, format_value

PRODUCED = ("notebooks", "html", "findings", "report.md", "index.html", "run.json", "run.log", ".complete")
COMPLETE_MARKER = ".complete"  # written into the staging folder once its report is complete


def render_notebook_html(executed: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    atomic_write_text(target, body)


def _findings(staging: Path, stem: str) -> dict:
    path = findings_path(stem, staging)
    return json.loads(path.read_text()) if path.exists() else {}


def report_rows(results: list[Execution], staging: Path) -> list[dict]:
    rows = []
    for r in results:
        try:
            doc = _findings(staging, r.notebook)
        except (OSError, ValueError):  # a half-written findings file of a killed kernel
            doc = {}
        rows.append({"notebook": r.notebook, "status": "ok" if r.ok else "FAILED",
                     "seconds": round(r.seconds, 1), "parameters": doc.get("parameters", {}),
                     "findings": doc.get("findings", {}), "error": r.error,
                     "failed_cell": r.failed_cell})
    return rows


def write_run_report(rows: list[dict], staging: Path, started: float) -> None:
    total = sum(r["seconds"] for r in rows)
    ok = sum(r["status"] == "ok" for r in rows)
    lines = [f"# Workbook run report", "",
             f"{ok} of {len(rows)} notebooks ran; total {total:.0f} s; finished "
             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}.", ""]
    summary = Table(["notebook", "status", "wall time (s)", "parameters", "findings"],
                    [[r["notebook"], r["status"], r["seconds"],
                      ", ".join(f"{k}={v}" for k, v in r["parameters"].items()), len(r["findings"])] for r in rows])
    lines += [summary.to_markdown(), ""]
    for r in rows:
        lines += [f"## {r['notebook']} — {r['status']} ({r['seconds']} s)", ""]
        if r["error"]:
            lines += [f"Failed in cell {r['failed_cell']}: `{r['error'][:500]}`", ""]
        if r["findings"]:
            lines += [Table(["finding", "value"], [[k, v] for k, v in r["findings"].items()]).to_markdown(), ""]
    atomic_write_text(staging / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(staging / "run.json", json.dumps({"rows": rows, "total_seconds": total}, indent=2) + "\n")

    def esc(v):
        return html.escape(format_value(v))
    trs = "".join(
        f"<tr><td><a href='html/{esc(r['notebook'])}.html'>{esc(r['notebook'])}</a></td>"
        f"<td style='color:{'green' if r['status'] == 'ok' else 'red'}'>{esc(r['status'])}</td>"
        f"<td>{r['seconds']}</td><td><code>{esc(json.dumps(r['parameters']))}</code></td>"
        f"<td>{'<br>'.join(f'{esc(k)} = {esc(v)}' for k, v in r['findings'].items())}"
        f"{'<br><b>' + esc(r['error'][:300]) + '</b>' if r['error'] else ''}</td></tr>" for r in rows)
    page = (f"<!doctype html><meta charset='utf-8'><title>Workbook run</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px;"
            f"vertical-align:top}}table{{border-collapse:collapse}}</style>"
            f"<h1>Workbook run</h1><p>{ok} of {len(rows)} notebooks ran; total {total:.0f} s. "
            f"Report: <a href='report.md'>report.md</a></p>"
            f"<table><tr><th>notebook</th><th>status</th><th>wall time (s)</th><th>parameters</th>"
            f"<th>findings</th></tr>{trs}</table>")
    atomic_write_text(staging / "index.html", page)


class RunLocked(RuntimeError):
    """Another run holds the build folder's lock."""


def _names(build: Path) -> dict[str, Path]:
    """The folders and files a run keeps beside `build` (all start with '.<build name>-')."""
    prefix = f".{build.name}-"
    return {"lock": build.with_name(prefix + "lock"),
            "staging": build.with_name(f"{prefix}staging-{os.getpid()}"),
            "old": build.with_name(f"{prefix}old-{os.getpid()}")}


@contextlib.contextmanager
def build_lock(build: Path):
    """Hold an exclusive lock on `.build-lock` beside `build` for the whole run.

    Raises RunLocked at once (no waiting) when another process holds it. The
    lock is released when the process ends, however it ends.
    """
    import fcntl
    path = _names(build)["lock"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunLocked(f"another run is already writing {build} ({holder}); wait for it to finish, "
                            "or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the lock


def _leftovers(build: Path) -> list[Path]:
    prefix = f".{build.name}-"
    return sorted((d for d in build.parent.glob(f"{prefix}*")
                   if d.is_dir() and (d.name.startswith(prefix + "staging-") or d.name.startswith(prefix + "old-"))),
                  key=lambda d: d.stat().st_mtime)


def _carry_missing(source: Path, build: Path) -> list[str]:
    """Move entries of `source` that a run does not produce and `build` lacks into `build`."""
    moved = []
    for entry in sorted(source.iterdir()):
        if entry.name not in PRODUCED and not (build / entry.name).exists():
            os.replace(entry, build / entry.name)
            moved.append(entry.name)
    return moved


def recover(build: Path) -> list[str]:
    """Repair what a run killed half-way left behind; return one note per action.

    No build/ but leftovers: a run died between its two renames; build/ comes
    back from the completed staging folder (the newer results), else from the
    previous build. Every other leftover `.build-staging-*` / `.build-old-*`
    folder is removed, after moving into build/ anything of it that a run does
    not produce and build/ lacks (sweeps, test runs, ...). Call under build_lock.
    """
    build = Path(build)
    notes = []
    leftovers = _leftovers(build)
    if not build.exists() and leftovers:
        staged = [d for d in leftovers if "-staging-" in d.name and (d / COMPLETE_MARKER).exists()]
        olds = [d for d in leftovers if "-old-" in d.name]
        pick = (staged or olds or [None])[-1]
        if pick is not None:
            os.replace(pick, build)
            leftovers.remove(pick)
            notes.append(f"restored {build.name}/ from {pick.name} (an earlier run stopped while swapping folders)")
    for d in leftovers:
        carried = _carry_missing(d, build) if build.exists() else []
        shutil.rmtree(d, ignore_errors=True)
        notes.append(f"removed leftover {d.name}" + (f" (moved {', '.join(carried)} into {build.name}/)"
                                                     if carried else ""))
    return notes


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link copy of a file or folder (a plain copy where links are not possible)."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, copy_function=link, symlinks=True)
    else:
        link(source, target)


def swap_into_place(staging: Path, build: Path, *, exchange: Callable[[Path, Path], bool] = _exchange) -> None:
    """Make `staging` the new `build`, keeping what a run does not produce, never leaving no build/.

    1. Hard-link build/'s other entries (sweeps, test runs, ...) into staging.
    2. Exchange the two folders atomically, or (unsupported) rename build/ to
       .build-old-<pid> and staging to build/: a crash between these two
       renames is repaired by the next run's recover().
    3. Remove the previous build.
    """
    staging, build = Path(staging), Path(build)
    if not build.exists():
        os.replace(staging, build)
        return
    for entry in build.iterdir():
        if entry.name not in PRODUCED and not (staging / entry.name).exists():
            _link_tree(entry, staging / entry.name)
    old = _names(build)["old"]
    if exchange(staging, build):
        os.replace(staging, old)  # staging's name now holds the previous build
    else:
        os.replace(build, old)
        os.replace(staging, build)
    shutil.rmtree(old, ignore_errors=True)


def _run_one(executor, nb: Path, staging: Path, parameters: dict | None, html_out: bool) -> Execution:
    """Execute and render one notebook; any failure becomes a failed Execution, never an exception."""
    output = staging / "notebooks" / nb.name
    t0 = time.perf_counter()
    try:
        if parameters:
            result = executor(nb, output, build_dir=staging, parameters=parameters)
        else:
            result = executor(nb, output, build_dir=staging)
    except Exception as exc:  # an executor that raised: report it like any other failure
        result = Execution(nb.stem, output, dict(parameters or {}), False, time.perf_counter() - t0,
                           f"{type(exc).__name__}: {exc}", type(exc).__name__)
    if html_out and Path(result.output).exists():
        try:
            render_notebook_html(result.output, staging / "html" / f"{nb.stem}.html")
        except Exception as exc:
            note = f"HTML rendering failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
            result.error = f"{result.error}; {note}" if result.error else note
            result.error_name = result.error_name or type(exc).__name__
            result.ok = False
    return result


def _status_line(i: int, n: int, result: Execution) -> str:
    text = f"{'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s"
    if not result.ok:
        where = f"cell {result.failed_cell}: " if result.failed_cell is not None else ""
        text += f" — {where}{result.error.splitlines()[0][:200] if result.error else 'no error message'}"
    return text


def run_all(notebooks: list[Path], build: Path, *, executor: Callable[..., Execution] = execute,
            html: bool = True, log: Callable[..., None] = print, parameters: dict[str, Any] | None = None,
            kernel_log: bool = True) -> list[dict]:
    """Run `notebooks` in order into a staging folder; on completion it becomes `build`.

    Returns the report rows. If interrupted (Ctrl-C, SystemExit) the staging
    folder is removed and `build` is left untouched.
    log(text, end=...): called twice per notebook, the name (end="") then its
      outcome, so a terminal shows one line per notebook.
    parameters: papermill parameters for every notebook; a name a notebook
      does not declare raises ParameterError before anything runs.
    kernel_log: send file descriptor 2 (kernel chatter) to <build>/run.log meanwhile.
    Raises RunLocked when another run holds the lock.
    """
    build = Path(build).resolve()
    if parameters:
        for nb in notebooks:
            try:
                declared = list(declared_parameters(nb))
            except (OSError, SyntaxError, ValueError):
                continue  # an unreadable notebook is reported as failed when its turn comes
            check_names(list(parameters), declared, nb.stem)
    with build_lock(build):
        for note in recover(build):
            log(note)
        staging = _names(build)["staging"]
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.time()
        chatter = stderr_to(staging / "run.log") if kernel_log else contextlib.nullcontext()
        try:
            results = []
            with chatter:
                for i, nb in enumerate(notebooks, 1):
                    log(f"[{i}/{len(notebooks)}] {nb.stem} ... ", end="")
                    result = _run_one(executor, nb, staging, parameters, html)
                    log(_status_line(i, len(notebooks), result))
                    results.append(result)
            rows = report_rows(results, staging)
            write_run_report(rows, staging, started)
            atomic_write_text(staging / COMPLETE_MARKER, f"{time.time()}\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            log("\nrun interrupted: the previous build/ is left as it was")
            raise
        swap_into_place(staging, build)
    return rows


def _print(text: str, end: str = "\n") -> None:
    print(text, end=end, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="run only notebooks whose names start with these prefixes")
    parser.add_argument("--build", type=Path, default=REPO_ROOT / "build")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a papermill parameter for every notebook run (a Python literal, else a string)")
    args = parser.parse_args(argv)
    notebooks = [p for p in notebook_paths() if not args.only or any(p.name.startswith(o) for o in args.only)]
    if not notebooks:
        print("no notebooks matched", file=sys.stderr)
        return 2
    from .sweep import parse_value
    parameters = {name: parse_value(value) for name, value in args.parameter}
    try:
        rows = run_all(notebooks, args.build, parameters=parameters or None, log=_print)
    except ParameterError as err:
        print(f"ParameterError: {err}", file=sys.stderr)
        return 2
    except RunLocked as err:
        print(f"make run: {err}", file=sys.stderr)
        return 3
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r["notebook"] for r in rows if r["status"] != "ok"]
    total = sum(r["seconds"] for r in rows)
    print(f"{len(ok)} of {len(rows)} notebooks ran in {total:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else "")
          + f". Report: {args.build / 'report.md'} · page: {args.build / 'index.html'}"
          f" · kernel messages: {args.build / 'run.log'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
