"""The command line: arguments checked before TensorFlow is imported; exit 0 when the diagnosis ran,
1 when a --fail-on code was found, 2 on bad input (one line, nothing written)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from .codes import CHECKS, CODES, parse_fail_on
from .inputs import TASKS, DiagnoseError, readable

PROG = "workbook-diagnose"
USAGE_DOC = """Diagnose your own model: the workbook's measurements pointed at a Keras model and its data.

    python -m helpers.diagnose MODEL DATA [options]
    workbook-diagnose MODEL DATA [options]          (the same, installed as a console script)

MODEL: a Keras 3 .keras file or a Keras .h5 file. DATA: an .npz with x_train, y_train, x_test, y_test and
optionally sample_weight_train (x_test/y_test: held-out data). Writes report.json, report.md and
report.html to --out (default build/diagnose/<model stem>-<hash of its path>/).

Exit status: 0 the diagnosis ran; 1 it found a code named by --fail-on; 2 bad input (one line on stderr,
nothing written); 3 the diagnosis itself failed on this model (one line on stderr naming the error; please
report it). The model file is only read.

Codes: """ + ", ".join(CODES)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        print(f"{PROG}: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=USAGE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a Keras 3 .keras file, or an .h5 file")
    p.add_argument("data", metavar="DATA", help="an .npz with x_train, y_train, x_test, y_test [, sample_weight_train]")
    p.add_argument("--out", metavar="DIR", help="where the report goes (default build/diagnose/<stem>-<hash>/)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="the batch size you train with (training-mode scoring, gradient noise); default 32")
    p.add_argument("--only", metavar="CHECKS", help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--seed", type=int, default=0, help="seeds the batches drawn and any subsample; default 0")
    p.add_argument("--max-examples", type=int, metavar="N", help="use a random N of the training and of the "
                   "held-out examples (default: all)")
    p.add_argument("--task", choices=TASKS, default="auto", help="classes, regression or timestep (default auto)")
    p.add_argument("--fix", metavar="OUT.keras", help="write a copy with recomputed BN statistics, only when that "
                   "improves the held-out metric beyond its noise (else nothing is written, and the reason printed)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import this module or .py file first, so the custom classes it registers load "
                   "(repeatable)")
    p.add_argument("--unsafe", action="store_true", help="allow Lambda layers (Keras runs their code: only for "
                   "files you trust)")
    p.add_argument("--fail-on", metavar="CODES", help="comma-separated codes (or a severity: error, warning): "
                   "exit 1 when any is found")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (findings, one per line) or json (report.json on stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def default_out(model: str) -> Path:
    """build/diagnose/<stem>-<8 hex of the resolved path>: two files both named model.keras do not collide."""
    resolved = str(Path(model).expanduser().resolve())
    return Path("build") / "diagnose" / f"{Path(model).stem}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def creatable(folder: Path, flag: str) -> None:
    """The folder exists, or can be made: its nearest existing ancestor is a writable directory."""
    folder = Path(folder).expanduser().absolute()
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DiagnoseError(f"{flag} {folder}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK):
        raise DiagnoseError(f"{flag} {folder}: cannot be created, {ancestor} is not writable")


def check_arguments(args) -> tuple[list[str] | None, tuple[str, ...]]:
    """Everything that can be checked without TensorFlow. Returns (only, fail_on codes)."""
    only = None
    if args.only is not None:
        only = [c.strip() for c in args.only.split(",") if c.strip()]
        unknown = [c for c in only if c not in CHECKS]
        if unknown or not only:
            raise DiagnoseError(f"--only {args.only!r}: unknown check(s) {', '.join(unknown) or '(none given)'}; "
                                f"allowed: {', '.join(CHECKS)}")
    fail_on: tuple[str, ...] = ()
    if args.fail_on is not None:
        try:
            fail_on = parse_fail_on(args.fail_on)
        except ValueError as err:
            raise DiagnoseError(f"--fail-on {args.fail_on!r}: {err}") from None
    if args.batch_size < 2:
        raise DiagnoseError(f"--batch-size {args.batch_size}: expected an integer ≥ 2")
    if args.max_examples is not None and args.max_examples < 2:
        raise DiagnoseError(f"--max-examples {args.max_examples}: expected an integer ≥ 2")
    readable(Path(args.model).expanduser(), "MODEL", directory_ok=True)
    readable(Path(args.data).expanduser(), "DATA")
    out = Path(args.out) if args.out else default_out(args.model)
    if out.exists() and not out.is_dir():
        raise DiagnoseError(f"--out {out}: exists and is not a directory")
    creatable(out, "--out")
    if args.fix is not None:
        fix = Path(args.fix).expanduser()
        if fix.suffix != ".keras":
            raise DiagnoseError(f"--fix {args.fix}: the copy is written as a .keras file; name it *.keras")
        if fix.exists() and fix.resolve() == Path(args.model).expanduser().resolve():
            raise DiagnoseError(f"--fix {args.fix}: is MODEL itself; the model file is never overwritten")
        if fix.is_dir():
            raise DiagnoseError(f"--fix {args.fix}: is a directory")
        creatable(fix.parent, "--fix")
    for spec in args.imports:
        if (spec.endswith(".py") or os.sep in spec) and not Path(spec).expanduser().is_file():
            raise DiagnoseError(f"--import {spec}: no such file")
    return only, fail_on


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        only, fail_on = check_arguments(args)
    except DiagnoseError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(args.model)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        from ..workbook.environment import quiet_tensorflow
        quiet_tensorflow()
        from .core import diagnose
        diag = diagnose(args.model, args.data, batch_size=args.batch_size, only=only, seed=args.seed,
                        max_examples=args.max_examples, task=args.task, imports=args.imports, unsafe=args.unsafe,
                        progress=not args.quiet)
        fixed = diag.fix(args.fix) if args.fix else None
    except OSError as err:
        print(f"{PROG}: {getattr(err, 'filename', None) or ''}: cannot write ({err.strerror or err})", file=sys.stderr)
        return 2
    except DiagnoseError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 — the diagnosis failed, not the input: exit 3 with one line
        from .inputs import shorten
        print(f"{PROG}: the diagnosis failed ({type(err).__name__}: {shorten(err, 240)}); nothing was written. "
              "--only can skip the check that fails", file=sys.stderr)
        return 3
    try:
        diag.write(out)
    except OSError as err:
        print(f"{PROG}: --out {out}: cannot write the report ({err.strerror or err})", file=sys.stderr)
        return 2
    found = [c for c in diag.codes if c in fail_on]
    if args.format == "json":
        from .report import report_json
        sys.stdout.write(report_json(diag))
    else:
        print(diag.report["verdict"])
        for f in diag.report["findings"]:
            print(f"- [{f['severity']}] {f['code']}: {f['message']}")
        print(f"report: {out / 'report.md'} (plots in {out / 'report.html'})")
    if args.fix:
        msg = (f"--fix: wrote {fixed} ({diag.fix_reason})" if fixed else
               f"--fix: wrote nothing: {diag.fix_reason}")
        print(msg, file=sys.stderr if args.format == "json" else sys.stdout)
    if found:
        print(f"{PROG}: --fail-on: found {', '.join(found)}", file=sys.stderr)
        return 1
    return 0
