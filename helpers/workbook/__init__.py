"""The machinery that runs the workbook, kept apart from the lessons' topics.

    environment  setup(): parameter names and values checked, seeding, quiet logs, logical devices
    params       the parameter rules (Int, Float, Text, ListOf, ...), check_relation, check_cost, ParameterError
    findings     record() / show_findings(): the numbers a notebook run keeps
    checks       check(): a claim compared with a measurement, failing loudly
    notebooks    executing a notebook with papermill on this interpreter's kernel (what make run,
                 sweeps, benchmarks and tests share); a notebook's declared parameters
    run_all      python -m helpers.workbook.run_all: `make run`, its report, lock, build/ swap and repair
    sweep        python -m helpers.workbook.sweep NOTEBOOK --grid name=v1,v2 ...
    tables, plotting, widgets   how results are shown: tables, one plot style, widget panels

Notebooks import the everyday names from the top-level package:
`from helpers import setup, record, show_findings, check, Int, ...`.
"""
