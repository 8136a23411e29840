"""Run one notebook over a grid of parameters with papermill and collect findings.

    python -m helpers.workbook.sweep notebooks/02_batchnorm_small_batches.ipynb --grid seed=0,1,2 epochs=5,10

Each grid point is one papermill run into build/sweeps/<name>/run-NNN/ (one
failure does not stop the rest). Every run's parameters, status, seconds and
findings become one row of build/sweeps/<name>.csv; a summary (mean, min, max
of each numeric finding over seeds, per setting of the other parameters) is
printed and written to build/sweeps/<name>.md.
Values are Python literals separated by top-level commas: `batch_sizes=[2,4],[8,16]`.

A grid name that the notebook's `parameters` cell does not declare stops the
sweep before any run (exit 2), with the allowed names; a bad value fails its
run in the setup cell with a ParameterError, recorded in the row's error.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from .findings import atomic_write_text, build_dir, findings_path
from .notebooks import check_notebook_parameters, execute
from .tables import Table


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(items: list[str]) -> dict[str, list]:
    """['seed=0,1', 'lr=0.1'] -> {'seed': [0, 1], 'lr': [0.1]}."""
    grid = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"grid item {item!r} is not name=v1,v2,...")
        name, values = item.split("=", 1)
        name = name.strip()
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a parameter name")
        parsed = [parse_value(v) for v in split_top_level(values)]
        if not parsed:
            raise ValueError(f"no values for {name!r}")
        grid[name] = parsed
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _cell(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def summarize(rows: list[dict], grid: dict[str, list]) -> Table:
    """Mean/min/max of each numeric finding over seeds, per setting of the other parameters."""
    keys = [k for k in grid if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(json.dumps(r[k]) for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        ok = [m for m in members if m["status"] == "ok"]
        names = sorted({n for m in ok for n, v in m["findings"].items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for n in names:
            vals = np.array([m["findings"][n] for m in ok if isinstance(m["findings"].get(n), (int, float))], float)
            out.append([*(json.loads(k) for k in key), n, len(vals), vals.mean(), vals.min(), vals.max()])
        if len(ok) < len(members):
            out.append([*(json.loads(k) for k in key), "FAILED runs", len(members) - len(ok), "", "", ""])
    return Table([*keys, "finding", "runs", "mean", "min", "max"], out)


def sweep(notebook: Path, grid: dict[str, list], name: str | None = None, root: Path | None = None,
          executor=execute) -> tuple[list[dict], Path]:
    """Run every grid point; return (rows, csv path).

    Raises ParameterError, before any run, for a grid name the notebook does not declare.
    """
    from tqdm.auto import tqdm
    notebook = Path(notebook)
    check_notebook_parameters(notebook, grid)
    name = name or notebook.stem
    root = (root or build_dir() / "sweeps")
    points = grid_points(grid)
    rows = []
    for i, params in enumerate(tqdm(points, desc=f"sweep {name}", unit="run")):
        run_dir = root / name / f"run-{i:03d}"
        result = executor(notebook, run_dir / notebook.name, parameters=params, build_dir=run_dir)
        path = findings_path(notebook.stem, run_dir)
        found = json.loads(path.read_text())["findings"] if (result.ok and path.exists()) else {}
        rows.append({**params, "status": "ok" if result.ok else "failed", "seconds": round(result.seconds, 2),
                     "error": result.error, "findings": found})
        if not result.ok:
            tqdm.write(f"run {i} {params} failed: {result.error[:200]}")
    finding_names = sorted({k for r in rows for k in r["findings"]})
    header = [*grid, "status", "seconds", "error", *finding_names]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow([_cell(r[k]) for k in grid] + [r["status"], r["seconds"], r["error"]]
                        + [_cell(r["findings"].get(k, "")) for k in finding_names])
    csv_path = root / f"{name}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(root / f"{name}.md", summarize(rows, grid).to_markdown() + "\n")
    return rows, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--grid", nargs="+", required=True, metavar="NAME=V1,V2")
    parser.add_argument("--name", help="sweep name (default: the notebook stem)")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        parser.error(f"no notebook {args.notebook}")
    try:
        grid = parse_grid(args.grid)
        check_notebook_parameters(args.notebook, grid)
    except ValueError as err:  # ParameterError is a ValueError
        parser.error(str(err))
    rows, csv_path = sweep(args.notebook, grid, args.name)
    print(summarize(rows, grid).to_markdown())
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} runs ok; rows in {csv_path}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
