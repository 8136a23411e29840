"""`python -m helpers.diagnose`: exit 0 and three reports on good input; on each bad input exit 2,
one line on stderr naming the problem, and nothing written to the output folder."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from helpers import diagnose as D
from helpers.workbook.notebooks import REPO_ROOT

MODEL, DATA = D.DEFAULT_MODEL, D.DEFAULT_DATA


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "helpers.diagnose", *map(str, args), "--quiet"],
                          capture_output=True, text=True, cwd=cwd or REPO_ROOT, env=env, timeout=300)


def _write_npz(path, **changes):
    with np.load(DATA) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del arrays[k]
    np.savez(path, **arrays)
    return path


def _assert_refused(rc, stderr, out, *words):
    assert rc == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {lines}"
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists(), "something was written to DIR"
    assert not any(p.name.startswith(f".{out.name}-") for p in out.parent.iterdir()), "a temporary folder was left"


def test_good_run_writes_three_reports_and_leaves_the_model_alone(tmp_path):
    before = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    out = tmp_path / "report"
    res = _cli(MODEL, DATA, "--out", out, "--only", "bn,batch1,gap")
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == before
    report = json.loads((out / "report.json").read_text())
    assert report["bn_statistics"]["stale"] is True          # the default example's known problem
    assert report["noise"] is None and report["timestep"] is None
    assert "## Findings" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_default_out_dir_is_build_diagnose_model_stem(tmp_path):
    model = tmp_path / "mine.keras"
    model.write_bytes(MODEL.read_bytes())
    res = _cli(model, DATA, "--only", "batch1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "build" / "diagnose" / "mine" / "report.json").exists()


def test_missing_file_is_one_line_exit_2(tmp_path):
    out = tmp_path / "out"
    res = _cli(tmp_path / "nope.keras", DATA, "--out", out)
    _assert_refused(res.returncode, res.stderr, out, "MODEL", "no such file")


def test_bad_data_after_tensorflow_started_is_still_one_line(tmp_path):
    """NaN in x_train is found after TensorFlow is imported: its start-up chatter must not add lines."""
    out = tmp_path / "out"
    with np.load(DATA) as f:
        x = f["x_train"].copy()
    x[3, 0, 0, 0] = np.nan
    res = _cli(MODEL, _write_npz(tmp_path / "nan.npz", x_train=x), "--out", out)
    _assert_refused(res.returncode, res.stderr, out, "x_train", "NaN/inf")


def _zip_not_keras(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a model")
    return path


CASES = {
    "missing data file": (lambda t: (MODEL, t / "missing.npz"), ("DATA", "no such file")),
    "model is a directory": (lambda t: (t, DATA), ("MODEL", "directory")),
    "model is text": (lambda t: ((t / "m.keras").write_text("hello") and t / "m.keras", DATA),
                      ("MODEL", "not a Keras model")),
    "model is a zip but not Keras": (lambda t: (_zip_not_keras(t / "z.keras"), DATA), ("MODEL", "not a Keras model")),
    "data is not npz": (lambda t: (MODEL, (t / "d.npz").write_text("x") and t / "d.npz"), ("DATA", "not a readable .npz")),
    "missing key": (lambda t: (MODEL, _write_npz(t / "k.npz", y_test=None)), ("missing key 'y_test'",)),
    "x shape does not fit": (lambda t: (MODEL, _write_npz(t / "s.npz", x_train=np.zeros((10, 4, 4, 1), np.float32),
                                                          y_train=np.zeros(10, np.int32))),
                             ("x_train", "does not fit the model input")),
    "y shape does not fit": (lambda t: (MODEL, _write_npz(t / "y.npz", y_train=np.zeros((1438, 3)))),
                             ("y_train", "does not fit the model output")),
    "inf in y": (lambda t: (MODEL, _write_npz(t / "i.npz", y_test=np.full(359, np.inf))), ("y_test", "NaN/inf")),
    "labels out of range": (lambda t: (MODEL, _write_npz(t / "r.npz", y_train=np.full(1438, 12, np.int32))),
                            ("y_train", "labels out of range", "0..9")),
    "negative label": (lambda t: (MODEL, _write_npz(t / "n.npz", y_test=np.full(359, -1, np.int32))),
                       ("y_test", "labels out of range")),
    "lengths differ": (lambda t: (MODEL, _write_npz(t / "l.npz", y_train=np.zeros(5, np.int32))),
                       ("x_train has 1438 examples but y_train has 5",)),
    "unknown check": (lambda t: (MODEL, DATA, "--only", "bn,speed"), ("unknown check", "speed")),
    "batch size 1": (lambda t: (MODEL, DATA, "--batch-size", "1"), ("--batch-size",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, case):
    """In-process (the subprocess behaviour is covered above): main() returns 2 with one stderr line."""
    make, words = CASES[case]
    args = make(tmp_path)
    out = tmp_path / "out"
    rc = D.main([*map(str, args), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    _assert_refused(rc, captured.err, out, *words)
    assert captured.out == ""


def test_usage_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        D.main([str(MODEL)])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_is_declared():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'workbook-diagnose = "helpers.diagnose:main"' in text
