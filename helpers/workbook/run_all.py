"""Execute every notebook into build/, render HTML, write the findings report.

    python -m helpers.workbook.run_all            # what `make run` calls
    python -m helpers.workbook.run_all 01 03      # only notebooks whose names start with these

Work happens in a staging folder beside build/; build/ is replaced only when
the run finishes (a notebook that fails is reported as failed, the others still
run, and the exit status is non-zero). An interrupted run leaves the previous
build/ as it was. Folders of build/ that a run does not produce (sweeps,
screenshots, benchmark results, test runs) are carried over.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from .findings import atomic_write_text, findings_path
from .notebooks import REPO_ROOT, Execution, execute, notebook_paths
from .tables import Table, format_value

PRODUCED = ("notebooks", "html", "findings", "report.md", "index.html", "run.json")


def render_html(executed: Path, target: Path) -> None:
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
        doc = _findings(staging, r.notebook)
        rows.append({"notebook": r.notebook, "status": "ok" if r.ok else "FAILED",
                     "seconds": round(r.seconds, 1), "parameters": doc.get("parameters", {}),
                     "findings": doc.get("findings", {}), "error": r.error,
                     "failed_cell": r.failed_cell})
    return rows


def write_report(rows: list[dict], staging: Path, started: float) -> None:
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


def swap_into_place(staging: Path, build: Path) -> None:
    """Carry over what the run does not produce, then replace build/ by staging."""
    if build.exists():
        for entry in build.iterdir():
            if entry.name not in PRODUCED and not (staging / entry.name).exists():
                shutil.move(str(entry), str(staging / entry.name))
        old = build.with_name(f".build-old-{os.getpid()}")
        os.replace(build, old)
        os.replace(staging, build)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, build)


def run_all(notebooks: list[Path], build: Path, *, executor: Callable[..., Execution] = execute,
            html: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Run `notebooks` in order into a staging folder; on completion it becomes `build`.

    Returns the report rows. If interrupted (any exception, Ctrl-C) the staging
    folder is removed and `build` is left untouched.
    """
    build = Path(build).resolve()
    staging = build.with_name(f".build-staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.time()
    try:
        results = []
        for i, nb in enumerate(notebooks, 1):
            log(f"[{i}/{len(notebooks)}] {nb.name} ...")
            result = executor(nb, staging / "notebooks" / nb.name, build_dir=staging)
            log(f"      {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s"
                + (f" — cell {result.failed_cell}: {result.error[:200]}" if not result.ok else ""))
            if html and result.output.exists():
                render_html(result.output, staging / "html" / f"{nb.stem}.html")
            results.append(result)
        rows = report_rows(results, staging)
        write_report(rows, staging, started)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        log("run interrupted: the previous build/ is left as it was")
        raise
    swap_into_place(staging, build)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="run only notebooks whose names start with these prefixes")
    parser.add_argument("--build", type=Path, default=REPO_ROOT / "build")
    args = parser.parse_args(argv)
    notebooks = [p for p in notebook_paths() if not args.only or any(p.name.startswith(o) for o in args.only)]
    if not notebooks:
        print("no notebooks matched", file=sys.stderr)
        return 2
    rows = run_all(notebooks, args.build)
    print()
    print(Table(["notebook", "status", "wall time (s)", "findings"],
                [[r["notebook"], r["status"], r["seconds"], len(r["findings"])] for r in rows]).to_markdown())
    print(f"\nreport: {args.build / 'report.md'}  ·  page: {args.build / 'index.html'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
