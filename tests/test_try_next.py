"""Every command a notebook's "What to try next" prints runs as printed from the repository root.

Each `python -m papermill …` command (and each `… -p name value` continuation, which means the same
notebook) is parsed the way papermill's command line parses it, then the notebook is executed up to
and including its setup cell with exactly those parameters: the names must be declared and the
values must pass the notebook's own validation and cost limits. Sweep commands name declared
parameters of a notebook that exists; `helpers.spikes.asker_state` commands pass its argument checks.
The slow part (the lesson itself) is not run: its claims are checked by nbval and the findings tests.
A command whose values are placeholders for the reader's own files (`path/to/…`) is checked for its
parameter names only.
"""
from __future__ import annotations

import re
import shlex

import nbformat
import pytest
import yaml
from papermill.cli import _resolve_type
from papermill.iorw import NoDatesSafeLoader

from helpers.workbook.notebooks import REPO_ROOT, declared_parameters, notebook_paths
from notebook_runs import run_setup_only

NOTEBOOKS = notebook_paths()
SETUP_RUNS = True   # notebook_runs starts this module's setup-only runs in the background at collection

# a command whose values are placeholders for the reader's own files: checked for its names only
PLACEHOLDERS = ("path/to/", "/abs/path/")


def try_next_commands(path) -> list[str]:
    """The inline-code commands of the notebook's "What to try next" section."""
    nb = nbformat.read(path, as_version=4)
    commands = []
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "## What to try next" not in cell.source:
            continue
        section = cell.source.split("## What to try next", 1)[1].split("\n## ", 1)[0]
        for span in re.findall(r"`([^`\n]+)`", section):
            span = span.strip()
            if span.startswith(("python -m", "... ", "-p ", "-y ")):
                commands.append(span)
    return commands


def papermill_parameters(args: list[str]) -> dict:
    """The parameters papermill's CLI makes of `-p NAME VALUE` and `-y YAML` options."""
    params, i = {}, 0
    while i < len(args):
        if args[i] in ("-p", "--parameters"):
            params[args[i + 1]] = _resolve_type(args[i + 2])
            i += 3
        elif args[i] in ("-y", "--parameters_yaml"):
            params.update(yaml.load(args[i + 1], Loader=NoDatesSafeLoader) or {})
            i += 2
        else:
            raise AssertionError(f"an option this test does not know: {args[i]!r} in {args}")
    return params


def papermill_cases():
    cases = []
    for path in NOTEBOOKS:
        for command in try_next_commands(path):
            args = shlex.split(command)
            if args[:3] == ["python", "-m", "papermill"]:
                source, output, options = args[3], args[4], args[5:]
                assert (REPO_ROOT / source).resolve() == path.resolve(), \
                    f"{path.name}: a command runs {source}, not this notebook: {command}"
                assert output.startswith(("build/", "/tmp/")), f"{path.name}: output outside build/: {command}"
            elif args[0] == "...":             # the same notebook, optionally another output file
                options = args[2:] if args[1:2] and args[1].endswith(".ipynb") else args[1:]
            elif args[0] in ("-p", "-y"):
                options = args
            else:
                continue
            parameters = papermill_parameters(options)
            if any(marker in command for marker in PLACEHOLDERS):
                unknown = set(parameters) - set(declared_parameters(path))
                assert not unknown, f"{path.name}: {command} sets undeclared parameters {sorted(unknown)}"
                continue
            cases.append(pytest.param(path, command, parameters, id=f"{path.stem}: {command}"))
    return cases


CASES = papermill_cases()


def test_the_notebooks_print_papermill_commands():
    assert {p.stem[:2] for p, *_ in (c.values for c in CASES)} >= {"01", "02", "03", "04", "05", "06"}


@pytest.mark.parametrize("path, command, parameters", CASES)
def test_a_papermill_command_passes_the_setup_cell(path, command, parameters):
    declared = declared_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    assert not unknown, f"{command!r} sets parameters the notebook does not declare: {unknown}"
    outcome = run_setup_only(path, parameters)      # made in the background while nbval runs
    assert outcome["ok"], f"{command!r} stops in the setup cell: {outcome['error']}"


def test_sweep_commands_name_a_notebook_and_its_parameters():
    seen = 0
    for path in NOTEBOOKS:
        for command in try_next_commands(path):
            args = shlex.split(command)
            if args[:3] != ["python", "-m", "helpers.workbook.sweep"]:
                continue
            seen += 1
            target = REPO_ROOT / args[3]
            assert target.exists(), command
            grid = args[args.index("--grid") + 1:]
            names = {g.split("=", 1)[0] for g in grid if not g.startswith("--")}
            assert names <= set(declared_parameters(target)), command
    assert seen >= 1


def test_regenerate_commands_pass_the_argument_checks():
    """The spike runs' regeneration commands a notebook suggests, written as the table's own command or through
    python -m helpers.workbook.regenerate, name real tables and pass the command's argument checks."""
    from helpers.spikes import regeneration
    from helpers.workbook import regenerate as rg
    own, through = "python -m helpers.spikes.asker_state", "python -m helpers.workbook.regenerate"
    commands = [c for p in NOTEBOOKS for c in try_next_commands(p) if c.startswith((own, through))]
    assert commands
    for command in commands:
        words = shlex.split(command)[3:]
        if command.startswith(through):
            names = [w for w in words if not w.startswith("-")]
            assert names and set(names) <= set(rg.TABLES), command
            argvs = [rg.TABLES[n][2] for n in names if rg.TABLES[n][0] == "helpers.spikes.asker_state"]
        else:
            argvs = [words]
        for argv in argvs:
            args = regeneration.parse_args(argv)
            assert args.seeds and 1 <= args.workers <= 8, command
