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


def test_table_readers_run_seeds_1_and_2_under_other_arithmetic():
    import os
    from notebook_runs import TABLE_READERS, findings_job, has_avx512, run_environment
    from helpers.workbook.arithmetic import AVX512_OFF, NUDGE_ENV, pinned
    for stem in TABLE_READERS:
        one = findings_job(stem, 1)
        assert one["env"] == {"TF_ENABLE_ONEDNN_OPTS": "1"}
        assert one["cpus"] is None or len(one["cpus"]) == 1
        two = findings_job(stem, 2)
        assert two["env"][NUDGE_ENV] == "1" and two["cpus"] is None
        assert (two["env"].get("NPY_DISABLE_CPU_FEATURES") == AVX512_OFF) == has_avx512()
        assert run_environment(stem, 0) == {"env": {}, "cpus": None}
    assert run_environment("01_steps_epochs_and_batches", 1) == {"env": {}, "cpus": None}
    before = os.sched_getaffinity(0)
    with pinned([min(before)]):
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before
