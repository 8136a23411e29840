"""Lesson 05's committed runs to convergence (data/converged_05.csv): the table's shape, and rows of other seeds
than the notebook's findings tests retrain (0-2), retrained here and judged by the committed seeds' spread."""
import json

import numpy as np
import pytest

from helpers.results import converged_runs
from helpers.data import load_digits
from helpers.workbook.committed import provenance_path


@pytest.fixture(scope="module")
def table():
    return converged_runs.read_converged_runs()


def test_the_table_holds_every_seed_run_and_recorded_epoch(table):
    seeds = sorted({s for s, _ in table})
    assert len(seeds) >= 5
    assert set(table) == {(s, r) for s in seeds for r in converged_runs.RUNS}
    n_train = len(load_digits().y_train)
    for (seed, run), rows in table.items():
        assert sorted(rows) == list(converged_runs.RECORDED_EPOCHS)
        k, scale, warmup = converged_runs.RUNS[run]
        last = rows[converged_runs.SETTINGS["epochs"]]
        assert last["global_batch"] == k * converged_runs.SETTINGS["per_replica_batch"]
        assert last["steps"] == converged_runs.SETTINGS["epochs"] * (n_train // last["global_batch"])
        # the rate counted in epochs: two decays of x0.1 by the end, whatever the replica count
        peak = scale * converged_runs.SETTINGS["base_learning_rate"]
        assert last["learning_rate"] == pytest.approx(peak * converged_runs.SETTINGS["decay_factor"] ** 2, rel=1e-5)
        assert rows[2]["learning_rate"] == pytest.approx(peak, rel=1e-5)
        assert (rows[1]["learning_rate"] < peak) == bool(warmup)      # a warm-up epoch ends just below the peak
        assert all(0 < r["test_accuracy"] <= 1 and r["train_loss"] > 0 for r in rows.values())


def test_the_provenance_names_the_command_and_the_seeds(table):
    info = json.loads(provenance_path(converged_runs.table_path()).read_text())
    assert info["command"].startswith("python -m helpers.results.converged_runs")
    assert sorted(info["seeds"]) == sorted({s for s, _ in table})
    assert info["rows"] == sum(len(rows) for rows in table.values())
    assert info["settings"]["epochs"] == converged_runs.SETTINGS["epochs"]


@pytest.mark.parametrize("seed", [7])
def test_another_seeds_runs_retrained_lie_within_the_committed_spread(table, seed):
    """Seed 7's 4-replica runs at η and at 4η + warm-up (the cheapest of the table: 2,200 steps each), trained
    again on this machine, judged like the notebook judges its own seed; then the claim on this sample:
    the linear rule recovers the fixed rate's deficit after 5 epochs and is not below it at convergence."""
    data = load_digits()
    live = {run: converged_runs.train_run(run, seed, data) for run in ("4rep", "4rep_scaled_warmup")}
    n_test = len(data.y_test)
    for run, result in live.items():
        for spread in converged_runs.run_spreads(run, result, table, seed, n_test):
            assert spread.within, spread.describe()
    acc = lambda run, e: live[run]["test_accuracy"][e - 1]      # noqa: E731
    end = converged_runs.SETTINGS["epochs"]
    assert acc("4rep_scaled_warmup", 5) - acc("4rep", 5) > 0.05
    assert acc("4rep_scaled_warmup", end) >= acc("4rep", end) - 1 / n_test


def test_run_spreads_refuse_an_unknown_run(table):
    with pytest.raises(ValueError):
        converged_runs.train_run("3rep", 0, load_digits())


def test_the_command_rejects_bad_seeds(capsys):
    with pytest.raises(SystemExit) as exc:
        converged_runs._main(["--seeds", "0,x"])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_the_notebooks_regenerate_commands_pass_the_argument_checks(monkeypatch):
    """Notebook 05's "What to try next" prints `python -m helpers.results.converged_runs …`: its arguments parse."""
    import re
    import shlex
    import nbformat
    from helpers.workbook.notebooks import notebook_path
    nb = nbformat.read(notebook_path("05_multi_device_gradient_averaging"), as_version=4)
    section = next(c.source for c in nb.cells if c.cell_type == "markdown" and "## What to try next" in c.source)
    commands = [s for s in re.findall(r"`([^`\n]+)`", section) if s.startswith("python -m helpers.results.converged_runs")]
    assert commands
    calls = []
    monkeypatch.setattr(converged_runs, "regenerate_converged_runs", lambda out, seeds, command: calls.append((out, seeds)) or [])
    for command in commands:
        assert converged_runs._main(shlex.split(command)[3:]) == 0, command
    assert all(len(seeds) >= 1 for _, seeds in calls)
