"""Diagnose your own model: the workbook's measurements pointed at a user's Keras model and data.

    python -m helpers.diagnose MODEL DATA [--fix OUT.keras] [--fail-on CODES] [--format json] ...
    from helpers.diagnose import diagnose, DiagnoseCallback
    diag = diagnose(model_or_path, data)          # data: .npz path, dict of arrays, tuple, or tf.data
    diag.codes, diag.report, diag.fix("fixed.keras"), diag.write("out/")

Each finding has a code (helpers.diagnose.codes.CODES), a severity and a message that links the lesson
teaching it. Modules: codes (codes, thresholds; no TensorFlow), inputs (loading and checking), metrics,
bn (the BN check: exact statistics, the culprit layer), checks (batch 1, gap, noise, per-timestep
weights), core (diagnose, Diagnosis), report (json, md, html), cli, callback (DiagnoseCallback).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codes import (APPLIED_TOLERANCE, BATCH1_TOLERANCE, CHECKS, CODES, CONSTANT_TOLERANCE, GAP_THRESHOLD, UNTRAINED_FRACTION,
                    IMPROVEMENT_SE, LESSONS, SCHEMA_VERSION, SEVERITIES, THRESHOLDS, parse_fail_on)
from .inputs import DiagnoseError

_EXAMPLE_FILES = {"EXAMPLES_DIR": "", "DEFAULT_MODEL": "stale_bn.keras", "DEFAULT_DATA": "digits.npz"}
_LAZY = {"diagnose": "core", "Diagnosis": "core", "main": "cli", "DiagnoseCallback": "callback",
         "write_report": "report", "report_json": "report"}


def __getattr__(name: str):
    # EXAMPLES_DIR (data/examples), DEFAULT_MODEL and DEFAULT_DATA (lesson 08's default example) are found
    # when used, where the workbook's data/ is; diagnose & co. are imported when first used.
    if name in _EXAMPLE_FILES:
        from ..workbook.committed import find_data_dir
        return find_data_dir() / "examples" / _EXAMPLE_FILES[name]
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None) -> int:
    from .cli import main as _main
    return _main(argv)


@dataclass(frozen=True)
class ExistingFile:
    """A notebook parameter rule (for helpers.setup): a path to an existing file ending in one of `suffixes`,
    or "" for `default`. check() returns the resolved path as a string."""
    suffix: str
    default: Path

    def allowed(self) -> str:
        return f"a path to an existing {self.suffix} file, or \"\" for the default {self.default.name}"

    def check(self, name: str, value: Any) -> str:
        from ..workbook.params import ParameterError
        if not isinstance(value, str):
            raise ParameterError(f"parameter {name!r} = {value!r} ({type(value).__name__}) is not allowed: "
                                 f"expected {self.allowed()}")
        if value.strip() == "":
            return str(self.default)
        path = Path(value).expanduser()
        suffixes = self.suffix.split("|")
        problem = ("does not exist" if not path.exists() else "is a directory" if path.is_dir()
                   else f"does not end in {self.suffix}" if path.suffix not in suffixes else None)
        if problem:
            raise ParameterError(f"parameter {name!r} = {value!r} {problem}: expected {self.allowed()}")
        return str(path.resolve())
