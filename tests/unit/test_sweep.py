import csv
import json

import nbformat
import pytest

from helpers.workbook.notebooks import Execution
from helpers.workbook.params import ParameterError
from helpers.workbook.sweep import grid_points, main, parse_grid, split_top_level, summarize, sweep


def _notebook(path, parameters="seed = 0  # 0–9\nlr = 0.1  # 0 < lr ≤ 1\n"):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_parse_grid_literals_lists_and_strings():
    grid = parse_grid(["seed=0,1,2", "batch_sizes=[2,4],[8,16]", "order=iid,grouped", "lr=1e-3"])
    assert grid == {"seed": [0, 1, 2], "batch_sizes": [[2, 4], [8, 16]], "order": ["iid", "grouped"], "lr": [0.001]}
    assert split_top_level("'a,b',[1,2],3") == ["'a,b'", "[1,2]", "3"]


@pytest.mark.parametrize("bad", ["seed", "1x=2", "seed="])
def test_parse_grid_rejects_malformed_items(bad):
    with pytest.raises(ValueError):
        parse_grid([bad])


def test_grid_points_is_the_cartesian_product():
    pts = grid_points({"seed": [0, 1], "lr": [0.1, 0.2, 0.3]})
    assert len(pts) == 6 and {"seed": 1, "lr": 0.3} in pts


def test_sweep_collects_findings_and_survives_a_failure(tmp_path):
    def fake_execute(notebook, output, parameters, build_dir):
        if parameters["seed"] == 1 and parameters["lr"] == 0.2:
            return Execution("nb", output, parameters, False, 0.1, "ClaimFailed: boom", "ClaimFailed", 5)
        path = build_dir / "findings" / "07_fake.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"findings": {"acc": parameters["lr"] + parameters["seed"], "ok": True}}))
        return Execution("nb", output, parameters, True, 0.1)

    rows, csv_path = sweep(_notebook(tmp_path / "07_fake.ipynb"), {"seed": [0, 1], "lr": [0.1, 0.2]},
                           root=tmp_path, executor=fake_execute)
    table = list(csv.DictReader(csv_path.open()))
    assert len(table) == 4 and [r["status"] for r in table].count("failed") == 1
    assert float(table[0]["acc"]) == pytest.approx(0.1)
    summary = summarize(rows, {"seed": [0, 1], "lr": [0.1, 0.2]})
    by_lr = {(r[0], r[1]): r for r in summary.rows}
    assert by_lr[(0.1, "acc")][2:] == [2, pytest.approx(0.6), pytest.approx(0.1), pytest.approx(1.1)]
    assert by_lr[(0.2, "FAILED runs")][2] == 1


def test_an_unknown_grid_name_stops_the_sweep_before_any_run(tmp_path):
    calls = []
    with pytest.raises(ParameterError, match=r"unknown parameter 'lerning_rate'.*expected one of 'seed', 'lr'"):
        sweep(_notebook(tmp_path / "07_fake.ipynb"), {"seed": [0], "lerning_rate": [0.1]}, root=tmp_path,
              executor=lambda *a, **k: calls.append(a))
    assert calls == [] and not list(tmp_path.glob("*.csv")), "nothing ran, nothing was recorded"


def test_the_sweep_command_refuses_an_unknown_name_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(_notebook(tmp_path / "07_fake.ipynb")), "--grid", "seed=0,1", "sede=1"])
    assert exit_.value.code == 2
    assert "unknown parameter 'sede' (did you mean 'seed'?)" in capsys.readouterr().err
