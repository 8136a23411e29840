"""The findings tests' run planner (tests/notebook_runs.py): which notebook runs are started in the
background, so that every run a findings test asks for is made once, and none that nbval makes."""
from types import SimpleNamespace

from notebook_runs import planned_runs


def item(path, stem=None, seed=None, fixtures=("findings",)):
    """A stand-in for a collected pytest item: its file, its module's STEM, its seed parameter."""
    return SimpleNamespace(fspath=path, module=SimpleNamespace(STEM=stem) if stem else None,
                           fixturenames=list(fixtures),
                           callspec=SimpleNamespace(params={"seed": seed}) if seed is not None else None)


def test_seed_0_comes_from_nbval_when_its_notebook_is_selected():
    items = [item("notebooks/03_x.ipynb"),
             *[item("tests/test_03_x.py", "03_x", s) for s in (0, 1, 2)],
             *[item("tests/test_04_y.py", "04_y", s) for s in (0, 1)]]
    assert planned_runs(items) == [("03_x", 1), ("03_x", 2), ("04_y", 0), ("04_y", 1)]


def test_each_run_is_planned_once_in_the_order_the_tests_ask():
    items = [item("tests/test_05_z.py", "05_z", 2), item("tests/test_05_z.py", "05_z", 1),
             item("tests/test_05_z.py", "05_z", 2)]
    assert planned_runs(items) == [("05_z", 2), ("05_z", 1)]


def test_tests_without_findings_or_a_seed_plan_nothing():
    items = [item("tests/test_03_x.py", "03_x", 1, fixtures=("rejected",)),   # a parameter test
             item("tests/test_03_x.py", "03_x"),                               # no seed parameter
             item("tests/unit/test_data.py", None, 1)]                         # no STEM
    assert planned_runs(items) == []
