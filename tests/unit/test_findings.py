import json
import math
import os

import pytest

import helpers.workbook.findings as findings


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_BUILD_DIR", str(tmp_path / "somewhere"))
    monkeypatch.setattr(findings, "_current", None)
    return tmp_path / "somewhere"


def test_record_before_setup_is_a_clear_error(build):
    with pytest.raises(RuntimeError, match="setup"):
        findings.record("x", 1)


def test_findings_land_in_build_dir_whatever_the_cwd(build, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    findings.start_findings("07_example", seed=3, parameters={"seed": 3, "epochs": [1, 2]})
    findings.record("accuracy", 0.93)
    findings.record("flag", True)
    findings.record("name", "focal")
    findings.record("nan_value", math.nan)
    doc = json.loads((build / "findings" / "07_example.json").read_text())
    assert doc["seed"] == 3 and doc["parameters"] == {"seed": 3, "epochs": [1, 2]}
    assert doc["findings"] == {"accuracy": 0.93, "flag": True, "name": "focal", "nan_value": None}
    assert findings.load_findings("07_example")["findings"]["accuracy"] == 0.93


def test_numpy_scalars_are_stored_as_python_numbers(build):
    import numpy as np
    findings.start_findings("07_example", 0, {})
    assert findings.record("x", np.float32(0.5)) == np.float32(0.5)
    findings.record("n", np.int64(7))
    assert findings.load_findings("07_example")["findings"] == {"x": 0.5, "n": 7}


def test_rejects_unserialisable_values_and_bad_names(build):
    findings.start_findings("07_example", 0, {})
    with pytest.raises(TypeError, match="number, bool or str"):
        findings.record("arr", {1, 2})
    with pytest.raises(TypeError, match="number, bool or str"):
        findings.record("nested", {"ok": 1, "bad": object()})
    with pytest.raises(TypeError, match="number, bool or str"):
        findings.record("keys", {4: 0.9})                  # JSON keys are strings: say so, don't convert
    with pytest.raises(ValueError, match="identifiers"):
        findings.record("not a name", 1)


def test_a_new_run_starts_a_fresh_file(build):
    findings.start_findings("07_example", 0, {})
    findings.record("old", 1)
    findings.start_findings("07_example", 1, {})
    assert findings.load_findings("07_example")["findings"] == {}


def test_writes_are_atomic_no_temp_files_left(build):
    findings.start_findings("07_example", 0, {})
    for i in range(20):
        findings.record(f"v{i}", i)
    assert sorted(os.listdir(build / "findings")) == ["07_example.json"]


def test_default_build_dir_is_the_repo_build(monkeypatch):
    monkeypatch.delenv("WORKBOOK_BUILD_DIR", raising=False)
    assert findings.build_dir() == findings.REPO_ROOT / "build"


def test_lists_and_str_keyed_dicts_of_numbers_are_findings(build):
    import numpy as np
    findings.start_findings("07_example", 0, {})
    findings.record("per_batch", {"4": np.float64(0.91), "1438": 0.9, "bad": float("nan")})
    findings.record("points", [1, 2.5, np.int64(3)])
    stored = findings.load_findings("07_example")["findings"]
    assert stored == {"per_batch": {"4": 0.91, "1438": 0.9, "bad": None}, "points": [1, 2.5, 3]}


def test_record_many_stores_a_section_at_once_and_all_or_nothing(build):
    findings.start_findings("07_example", 0, {})
    values = {"a": 1, "b": [0.5, 0.25], "c": "focal"}
    assert findings.record_many(values) is values
    assert findings.load_findings("07_example")["findings"] == {"a": 1, "b": [0.5, 0.25], "c": "focal"}
    with pytest.raises(ValueError, match="identifiers"):
        findings.record_many({"d": 2, "not a name": 3})
    with pytest.raises(TypeError, match="number, bool or str"):
        findings.record_many({"e": 4, "arr": {1, 2}})
    with pytest.raises(TypeError, match="dict"):
        findings.record_many([("f", 5)])
    assert findings.load_findings("07_example")["findings"] == {"a": 1, "b": [0.5, 0.25], "c": "focal"}
