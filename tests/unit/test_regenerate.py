"""helpers.workbook.regenerate: one command names every committed table and runs each table's own command."""
import re
from pathlib import Path

import pytest

from helpers.workbook import regenerate as rg

ROOT = Path(__file__).resolve().parents[2]


def test_every_table_names_a_command_that_exists(capsys):
    for name in rg.TABLES:
        assert callable(rg._function(name)), name
    assert rg.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed and rg.command(name) in listed for name in rg.TABLES)


def test_the_spike_tables_pass_their_argument_checks_and_read_what_comes_before():
    from helpers.spikes import regeneration
    for name in ("spike_runs", "spike_runs_from_scratch", "spike_runs_lstm64"):
        regeneration.parse_args(rg.TABLES[name][2])
    order = list(rg.TABLES)
    assert order.index("spike_runs") < order.index("spike_runs_from_scratch")   # --from-scratch reads the b runs


def test_it_runs_each_table_in_order_with_its_arguments(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(rg, "_function", lambda name: (lambda argv: calls.append((name, argv)) or 0))
    assert rg.main(["tiny", "--", "--seeds", "0,1"]) == 0
    assert calls == [("tiny", ["tiny", "--seeds", "0,1"])]
    calls.clear()
    assert rg.main(["all"]) == 0
    assert [n for n, _ in calls] == list(rg.TABLES)
    # a failing table stops the run: nothing after it is regenerated
    calls.clear()
    monkeypatch.setattr(rg, "_function", lambda name: (lambda argv: calls.append(name) or (3 if name == "inference" else 0)))
    assert rg.main(["all"]) == 3
    assert calls[-1] == "inference" and "were not regenerated" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [([], "name a table"), (["nope"], "unknown table 'nope'"),
                                           (["tiny", "mnist1d", "--", "--seeds", "0"], "exactly one table")])
def test_bad_input_gets_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        rg.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_make_data_calls_it():
    makefile = (ROOT / "Makefile").read_text()
    data = re.search(r"^data:.*?\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert data.strip() == "$(PY) -m helpers.workbook.regenerate all"
