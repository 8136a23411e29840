"""A non-editable install (`pip install .`) carries every helpers package and finds the data.

The wheel is built from a copy of pyproject.toml and helpers/ in a temporary folder, so building
writes nothing (build/, *.egg-info) into the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def source_packages() -> list[str]:
    """Every package of the source tree: each folder under helpers/ holding an __init__.py, dotted."""
    root = REPO_ROOT / "helpers"
    return sorted(".".join(init.parent.relative_to(REPO_ROOT).parts) for init in root.rglob("__init__.py")
                  if "__pycache__" not in init.parts)


def source_modules() -> list[str]:
    return sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "helpers").rglob("*.py")
                  if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-deps .` builds (offline, with the environment's setuptools)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy2(REPO_ROOT / "pyproject.toml", src / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "helpers", src / "helpers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.whl")
    return path


def test_wheel_holds_every_helpers_package_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = source_packages()
    assert {"helpers", "helpers.workbook", "helpers.spikes"} <= set(packages)      # the tree is what we think
    missing = [p for p in packages if p.replace(".", "/") + "/__init__.py" not in names]
    assert not missing, f"packages left out of {wheel.name}: {missing} (pyproject.toml's [tool.setuptools])"
    missing = [m for m in source_modules() if m not in names]
    assert not missing, f"modules left out of {wheel.name}: {missing}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "workbook-diagnose = helpers.diagnose:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# Run by the installed copy: every package imports from the target folder, and the data are found from
# the working directory (notebooks/), as a lesson run from a non-editable install finds them.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import helpers, helpers.spikes
found = sorted(["helpers"] + [m.name for m in pkgutil.walk_packages(helpers.__path__, "helpers.") if m.ispkg])
files = {name: importlib.import_module(name).__file__ for name in found}
from helpers.workbook.committed import DATA_DIR, read_csv_rows
from helpers.data import load_digits
print(json.dumps({"files": files, "spikes": helpers.spikes.__file__, "data_dir": str(DATA_DIR),
                  "long_runs_rows": len(read_csv_rows(DATA_DIR / "long_runs.csv")),
                  "train": len(load_digits().x_train)}))
"""

# Run by the installed copy away from the repository: no data/ anywhere, then WORKBOOK_DATA_DIR.
NO_DATA = """
import json, os
import helpers, helpers.diagnose                      # importing needs no data
from helpers.workbook import committed
out = {}
try:
    committed.DATA_DIR
except FileNotFoundError as exc:
    out["unset"] = str(exc)
os.environ["WORKBOOK_DATA_DIR"] = os.getcwd()
try:
    committed.DATA_DIR
except FileNotFoundError as exc:
    out["wrong"] = str(exc)
os.environ["WORKBOOK_DATA_DIR"] = os.environ["REPO_DATA"]
out["set"] = str(committed.DATA_DIR)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """`pip install --no-deps --target T` of the wheel: the package lands in T, away from data/."""
    target = tmp_path_factory.mktemp("site") / "target"
    done = subprocess.run([*PIP, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _run_installed(target: Path, code: str, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WORKBOOK_DATA_DIR")}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3", REPO_DATA=str(REPO_ROOT / "data"))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_installed_copy_imports_every_package_and_finds_the_data(installed):
    got = _run_installed(installed, IMPORT_ALL, cwd=REPO_ROOT / "notebooks")
    assert sorted(got["files"]) == source_packages()
    for name, file in got["files"].items():      # from the target, not the editable install in .venv
        assert Path(file).resolve().is_relative_to(installed.resolve()), f"{name} imported from {file}"
    assert Path(got["spikes"]).resolve().is_relative_to(installed.resolve())
    assert Path(got["data_dir"]) == REPO_ROOT / "data"
    assert got["long_runs_rows"] > 0 and got["train"] == 1438


def test_installed_copy_without_data_names_the_variable(installed, tmp_path):
    got = _run_installed(installed, NO_DATA, cwd=tmp_path)
    assert "WORKBOOK_DATA_DIR" in got["unset"] and str(tmp_path) in got["unset"]
    assert "WORKBOOK_DATA_DIR" in got["wrong"] and "digits.npz" in got["wrong"]
    assert Path(got["set"]) == REPO_ROOT / "data"


def test_source_tree_finds_data_beside_the_package(monkeypatch, tmp_path):
    from helpers.workbook import committed
    monkeypatch.delenv("WORKBOOK_DATA_DIR", raising=False)
    assert committed.find_data_dir(cwd=tmp_path) == REPO_ROOT / "data" == committed.DATA_DIR
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(committed.DataDirNotFound, match="WORKBOOK_DATA_DIR"):
        committed.find_data_dir()
