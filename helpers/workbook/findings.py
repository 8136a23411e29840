"""Recorded findings: each notebook stores name -> value pairs that papermill
runs, the report and the tests read back.

A notebook's findings land in `<build>/findings/<notebook stem>.json`, where
<build> is $WORKBOOK_BUILD_DIR if set, else `<repo>/build` — whatever the
working directory. Every write is atomic (temporary file, then rename).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .tables import Table

REPO_ROOT = Path(__file__).resolve().parents[2]

_current: dict | None = None  # set by start_findings(), i.e. by setup()


def build_dir() -> Path:
    """The build folder: $WORKBOOK_BUILD_DIR, else <repo>/build."""
    env = os.environ.get("WORKBOOK_BUILD_DIR")
    return Path(env).resolve() if env else REPO_ROOT / "build"


def findings_path(notebook: str, root: Path | None = None) -> Path:
    return (root or build_dir()) / "findings" / f"{Path(notebook).stem}.json"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(name: str, value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # numpy / tensor scalar
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(f"{name}[{k!r}]", v) for k, v in value.items()}    # e.g. batch size -> accuracy
    if isinstance(value, (list, tuple)):
        return [_jsonable(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise TypeError(f"record({name!r}, ...): value must be a number, bool or str, or a list or a dict with str "
                    f"keys of them, got {type(value).__name__}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def start_findings(notebook: str, seed: int, parameters: dict) -> Path:
    """Begin a fresh findings file for this notebook run (called by setup)."""
    global _current
    _current = {
        "notebook": Path(notebook).stem,
        "seed": seed,
        "parameters": {k: v for k, v in parameters.items()},
        "started": _now(),
        "findings": {},
    }
    path = findings_path(notebook)
    _write(path)
    return path


def _write(path: Path) -> None:
    _current["updated"] = _now()
    atomic_write_text(path, json.dumps(_current, indent=2, sort_keys=False) + "\n")


def record(name: str, value: Any) -> Any:
    """Store one finding (a number, bool or str, or a list or str-keyed dict of them) and return the value unchanged."""
    if _current is None:
        raise RuntimeError("record() needs setup(...) to have run first in this notebook")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"finding names are identifiers, got {name!r}")
    _current["findings"][name] = _jsonable(name, value)
    _write(findings_path(_current["notebook"]))
    return value


def record_many(values: dict[str, Any]) -> dict[str, Any]:
    """Store several findings at once (a section's, in one call) and return them unchanged.

    Every name and value is validated before any is stored, so a bad entry stores none of them."""
    if _current is None:
        raise RuntimeError("record_many() needs setup(...) to have run first in this notebook")
    if not isinstance(values, dict):
        raise TypeError(f"record_many() takes a dict of name: value, got {type(values).__name__}")
    bad = [n for n in values if not isinstance(n, str) or not n.isidentifier()]
    if bad:
        raise ValueError(f"finding names are identifiers, got {bad[0]!r}")
    converted = {name: _jsonable(name, value) for name, value in values.items()}
    _current["findings"].update(converted)
    _write(findings_path(_current["notebook"]))
    return values


def current_findings() -> dict:
    return dict(_current["findings"]) if _current else {}


def load_findings(notebook: str, root: Path | None = None) -> dict:
    """The whole findings document of a notebook run (notebook, seed, parameters, findings)."""
    return json.loads(findings_path(notebook, root).read_text())


def findings_table(findings: dict | None = None) -> Table:
    findings = current_findings() if findings is None else findings
    return Table(["finding", "value"], [[k, v] for k, v in findings.items()],
                 title=f"Findings recorded to {findings_path(_current['notebook']) if _current else '-'}")


def show_findings() -> Table:
    """The notebook's last cell: the findings as a table (and where they were saved)."""
    if _current is None:
        raise RuntimeError("show_findings() needs setup(...) to have run first")
    return findings_table()
