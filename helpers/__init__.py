"""Helpers for the mini-batch training workbook.

Import has no side effects: the work happens in functions called with explicit
arguments. The notebooks start with

    from helpers import setup, record, show_findings, check, Int, Float, ...
    run = setup("NN_name", seed=(seed, Int(0, 2**31 - 1)), ...)

Two kinds of module:

The machinery that runs the workbook, apart from any topic, is the subpackage
helpers.workbook: setup (parameter names and values, seeding), params (the
rules), findings, checks, notebooks (papermill execution), run_all (`make
run`), sweep, tables, plotting, widgets.

Topic modules teach (import them where a lesson needs them):
    helpers.data          digits data set, batch orders (i.i.d., grouped by class)
    helpers.models        small model builders
    helpers.training      train(): fit with one progress bar, history as a table; accuracy
    helpers.batchnorm     NumPy reference BN, exact population statistics, precise BN, BN-state guard
    helpers.batch_size, helpers.gradient_noise   lesson 01: steps/epochs, regimes, gradient noise
    helpers.small_batches, helpers.mnist1d       lesson 02 · helpers.timeseries, helpers.bn_inference lesson 03
    helpers.running_stats lesson 04 · helpers.distributed, helpers.scaling, helpers.converged_runs lesson 05
    helpers.imbalanced, helpers.spikes (package) lessons 06–07 · helpers.diagnose lesson 08 and its CLI
"""
from .workbook.checks import ClaimFailed, check
from .workbook.environment import Run, setup
from .workbook.findings import load_findings, record, record_many, show_findings
from .workbook.params import (Bool, Choice, Float, FloatList, Int, IntList, ListOf,
                              ParameterError, Text, check_cost, check_relation, validate)
from .workbook.tables import Table

__all__ = ["setup", "Run", "record", "record_many", "show_findings", "load_findings", "check", "ClaimFailed",
           "Int", "Float", "Bool", "Choice", "ListOf", "IntList", "FloatList",
           "Text", "ParameterError", "check_relation", "check_cost", "validate", "Table"]
