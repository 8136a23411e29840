"""`make run` replaces build/ only when a run finishes; an interrupted run leaves it intact."""
import json

import pytest

from helpers.workbook.notebooks import Execution
from helpers.workbook.run_all import run_all


def _fake_executor(fail=(), interrupt_at=None):
    calls = []

    def execute(notebook, output, build_dir):
        calls.append(notebook.stem)
        if notebook.stem == interrupt_at:
            raise KeyboardInterrupt
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        path = build_dir / "findings" / f"{notebook.stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"parameters": {"seed": 0}, "findings": {"x": 1}}))
        ok = notebook.stem not in fail
        return Execution(notebook.stem, output, {}, ok, 1.0, "" if ok else "ClaimFailed: nope",
                         "" if ok else "ClaimFailed", None if ok else 4)
    execute.calls = calls
    return execute


@pytest.fixture
def old_build(tmp_path):
    build = tmp_path / "build"
    (build / "notebooks").mkdir(parents=True)
    (build / "report.md").write_text("previous report")
    (build / "sweeps").mkdir()
    (build / "sweeps" / "keep.csv").write_text("a,b")
    return build


NOTEBOOKS = ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]


def _paths(tmp_path):
    return [tmp_path / n for n in NOTEBOOKS]


def test_interrupted_run_keeps_previous_build(tmp_path, old_build):
    with pytest.raises(KeyboardInterrupt):
        run_all(_paths(tmp_path), old_build, executor=_fake_executor(interrupt_at="01_b"), html=False,
                log=lambda s: None)
    assert (old_build / "report.md").read_text() == "previous report"
    assert not list(tmp_path.glob(".build-staging-*")), "staging folder left behind"


def test_finished_run_replaces_build_and_keeps_other_folders(tmp_path, old_build):
    executor = _fake_executor(fail={"01_b"})
    rows = run_all(_paths(tmp_path), old_build, executor=executor, html=False, log=lambda s: None)
    assert executor.calls == ["00_a", "01_b", "02_c"], "a failure must not stop the other notebooks"
    assert [r["status"] for r in rows] == ["ok", "FAILED", "ok"]
    report = (old_build / "report.md").read_text()
    assert "previous report" not in report and "FAILED" in report and "ClaimFailed: nope" in report
    assert (old_build / "index.html").exists() and (old_build / "findings" / "02_c.json").exists()
    assert (old_build / "sweeps" / "keep.csv").read_text() == "a,b"
    assert not list(tmp_path.glob(".build-*"))


def test_first_run_creates_build(tmp_path):
    build = tmp_path / "build"
    run_all(_paths(tmp_path)[:1], build, executor=_fake_executor(), html=False, log=lambda s: None)
    assert (build / "report.md").exists()
