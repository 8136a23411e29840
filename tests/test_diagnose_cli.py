"""`python -m helpers.diagnose`: exit 0 when the diagnosis ran, 1 when a --fail-on code was found, 2 on bad
input: one line on stderr naming the problem, nothing written to the output folder, and, for everything
that can be checked without it, before TensorFlow is imported. The model file is only ever read."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import diagnose as D
from helpers.diagnose import cli
from helpers.diagnose.codes import CODES, SCHEMA_VERSION
from helpers.workbook.notebooks import REPO_ROOT

MODEL, DATA = D.DEFAULT_MODEL, D.DEFAULT_DATA
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")


def _cli(*args, cwd=None, python_flags=()):
    return subprocess.run([sys.executable, *python_flags, "-m", "helpers.diagnose", *map(str, args), "--quiet"],
                          capture_output=True, text=True, cwd=cwd or REPO_ROOT, env=ENV, timeout=300)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    return lines[0]


# ---------------------------------------------------------------- a tiny model, built once


@pytest.fixture(scope="module")
def keras_():
    from helpers.workbook.environment import quiet_tensorflow
    quiet_tensorflow()
    import keras
    return keras


def _bn_mlp(keras, d=6, classes=3, lambda_layer=False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((d,))
    h = keras.layers.Lambda(lambda t: 0.5 * t)(inp) if lambda_layer else inp
    h = keras.layers.Dense(8, use_bias=False)(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.99, name="bn")(h))
    model = keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, keras_):
    """A BN MLP trained one epoch at momentum 0.99 (statistics stale, weights fine), its .npz (256 examples)
    and the same model with a Lambda layer."""
    tmp = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=256)
    x = (3.0 + 5.0 * (2 * rng.normal(size=(3, 6))[y] + 0.3 * rng.normal(size=(256, 6)))).astype(np.float32)
    y = y.astype(np.int32)
    np.savez(tmp / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    paths = {"data": tmp / "data.npz"}
    for name, lam in (("model", False), ("lambda", True)):
        model = _bn_mlp(keras_, lambda_layer=lam)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        paths[name] = tmp / f"{name}.keras"
        model.save(paths[name])
    return paths


def _main(capsys, *args):
    rc = D.main([*map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ---------------------------------------------------------------- whole runs


def test_good_run_json_fail_on_and_fix(tmp_path):
    """The default example, in a subprocess: --format json prints report.json; --fail-on finds bn_stale (exit 1);
    --fix writes the recalibrated copy; three reports; the model file is only read."""
    before = _sha(MODEL)
    out, fixed = tmp_path / "report", tmp_path / "fixed.keras"
    res = _cli(MODEL, DATA, "--out", out, "--only", "bn,batch1,gap", "--format", "json", "--fail-on", "bn_stale",
               "--fix", fixed)
    assert res.returncode == 1, res.stderr
    assert "--fail-on: found bn_stale" in res.stderr and "--fix: wrote" in res.stderr
    assert _sha(MODEL) == before
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert json.loads(res.stdout) == report
    assert report["schema_version"] == SCHEMA_VERSION
    assert "bn_stale" in [f["code"] for f in report["findings"]]          # the default example's known problem
    assert report["noise"] is None and report["timestep"] is None
    assert report["checks_run"] == ["bn", "batch1", "gap"]
    assert "## Findings" in (out / "report.md").read_text()
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert zipfile.is_zipfile(fixed) and _sha(fixed) != before


def test_bad_data_after_tensorflow_started_is_still_one_line(tmp_path):
    """NaN in x_train is found after TensorFlow is imported: its start-up chatter must not add lines."""
    out = tmp_path / "out"
    with np.load(DATA) as f:
        x = f["x_train"].copy()
    x[3, 0, 0, 0] = np.nan
    res = _cli(MODEL, _write_npz(tmp_path / "nan.npz", x_train=x), "--out", out)
    _assert_refused(res.returncode, res.stderr, out, "x_train", "NaN/inf")
    assert res.stdout == ""


def test_text_output_and_exit_0(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = _main(capsys, tiny["model"], tiny["data"], "--out", out, "--only", "bn,gap")
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    lines = stdout.strip().splitlines()
    assert lines[0] == report["verdict"]
    assert lines[1:-1] == [f"- [{f['severity']}] {f['code']}: {f['message']}" for f in report["findings"]]
    assert lines[-1].startswith("report: ") and str(out / "report.md") in lines[-1]


@pytest.mark.parametrize("fail_on, rc", [("error", 1), ("bn_stale", 1), ("warning", 1), ("no_bn,input_scale", 0)])
def test_fail_on_codes_and_severities(tiny, tmp_path, capsys, fail_on, rc):
    got, _, err = _main(capsys, tiny["model"], tiny["data"], "--out", tmp_path / "out", "--only", "bn",
                        "--fail-on", fail_on)
    assert got == rc, err
    assert ("--fail-on: found bn_stale" in err) == (rc == 1)


def test_huge_batch_size_is_capped_and_format_json(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = _main(capsys, tiny["model"], tiny["data"], "--out", out, "--only", "gap", "--batch-size",
                          "1000000", "--format", "json")
    assert rc == 0
    report = json.loads(stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert report["data"]["batch_size_requested"] == 1000000
    assert report["data"]["batch_size"] == report["data"]["n_train"] == 256
    assert report["gap"]["batch_size"] == 256
    assert "examples_capped" in [f["code"] for f in report["findings"]]


def test_max_examples(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, _ = _main(capsys, tiny["model"], tiny["data"], "--out", out, "--only", "gap", "--max-examples", "100")
    assert rc == 0
    data = json.loads((out / "report.json").read_text())["data"]
    assert (data["n_train"], data["n_train_given"], data["n_test"], data["n_test_given"]) == (100, 256, 100, 256)


def test_fix_writes_only_when_allowed(tiny, tmp_path, capsys):
    before = _sha(tiny["model"])
    fixed = tmp_path / "fixed.keras"
    rc, stdout, _ = _main(capsys, tiny["model"], tiny["data"], "--out", tmp_path / "a", "--only", "gap",
                          "--fix", fixed)
    assert rc == 0 and "--fix: wrote nothing" in stdout and not fixed.exists()     # the BN check did not run
    rc, stdout, _ = _main(capsys, tiny["model"], tiny["data"], "--out", tmp_path / "b", "--only", "bn",
                          "--fix", fixed)
    assert rc == 0 and f"--fix: wrote {fixed}" in stdout and fixed.is_file()
    assert _sha(tiny["model"]) == before


def test_default_out_is_unique_per_model_path(tiny, tmp_path, monkeypatch, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.keras").write_bytes(tiny["model"].read_bytes())
    a, b = cli.default_out(tmp_path / "a" / "model.keras"), cli.default_out(tmp_path / "b" / "model.keras")
    assert a != b
    assert a.parent == b.parent == Path("build") / "diagnose"
    assert a.name.startswith("model-") and b.name.startswith("model-")
    assert cli.default_out(tmp_path / "a" / "model.keras") == a
    monkeypatch.chdir(tmp_path / "a")
    assert cli.default_out("model.keras") == a                  # the same file, named relatively
    rc, _, err = _main(capsys, "model.keras", tiny["data"], "--only", "batch1")
    assert rc == 0, err
    assert (tmp_path / "a" / a / "report.json").is_file()


def test_h5_model_runs(tiny, keras_, tmp_path, capsys):
    h5 = tmp_path / "model.h5"
    keras_.saving.load_model(tiny["model"]).save(h5)
    before = _sha(h5)
    rc, _, err = _main(capsys, h5, tiny["data"], "--out", tmp_path / "out", "--only", "bn")
    assert rc == 0, err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"]["bn_layers"] == 1
    assert _sha(h5) == before


def test_lambda_layer_needs_unsafe(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = _main(capsys, tiny["lambda"], tiny["data"], "--out", out, "--only", "batch1")
    _assert_refused(rc, err, out, "Lambda", "--unsafe")
    assert stdout == ""
    rc, _, err = _main(capsys, tiny["lambda"], tiny["data"], "--out", out, "--only", "batch1", "--unsafe")
    assert rc == 0, err
    assert (out / "report.json").is_file()


@pytest.mark.parametrize("where", ["--out", "--fix"])
def test_uncreatable_destination_is_bad_input(tiny, tmp_path, capsys, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    out = tmp_path / "out"
    args = (["--out", a_file / "report", "--only", "batch1"] if where == "--out" else
            ["--out", out, "--only", "bn", "--fix", a_file / "fixed.keras"])
    rc, stdout, err = _main(capsys, tiny["model"], tiny["data"], *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and where in err, err
    assert not out.exists() and a_file.read_text() == "keep me"


def test_savedmodel_folder_is_refused_with_what_to_do(tmp_path, capsys):
    saved = tmp_path / "exported"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    out = tmp_path / "out"
    rc, _, err = _main(capsys, saved, DATA, "--out", out)
    _assert_refused(rc, err, out, "SavedModel", ".keras")


# ---------------------------------------------------------------- refused before TensorFlow is imported

_PRE_TF = r"""
import contextlib, io, json, sys
from helpers.diagnose.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(args)
        except SystemExit as exit_:
            rc = exit_.code
    results.append([rc, err.getvalue(), out.getvalue()])
heavy = [m for m in ("tensorflow", "keras", "matplotlib") if m in sys.modules]
print(json.dumps({"results": results, "imported": heavy}))
"""


def test_arguments_are_checked_before_tensorflow_is_imported(tmp_path):
    out = tmp_path / "out"
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    cases = {
        "unknown --fail-on code": (["--fail-on", "bn_stale,nope"], ["--fail-on", "unknown code 'nope'"]),
        "empty --fail-on": (["--fail-on", ","], ["--fail-on"]),
        "batch size 1": (["--batch-size", "1"], ["--batch-size"]),
        "batch size not an integer": (["--batch-size", "x"], ["--batch-size", "invalid int"]),
        "max examples 1": (["--max-examples", "1"], ["--max-examples"]),
        "unknown check": (["--only", "bn,speed"], ["unknown check", "speed"]),
        "no check": (["--only", ","], ["--only"]),
        "unknown task": (["--task", "speech"], ["--task"]),
        "--fix not .keras": (["--fix", str(tmp_path / "fixed.h5")], ["--fix", ".keras"]),
        "--fix is MODEL": (["--fix", str(MODEL)], ["--fix", "never overwritten"]),
        "--import missing file": (["--import", str(tmp_path / "nope.py")], ["--import", "no such file"]),
    }
    runs = {name: [str(MODEL), str(DATA), "--out", str(out), "--quiet", *args] for name, (args, _) in cases.items()}
    runs["missing model"] = [str(tmp_path / "nope.keras"), str(DATA), "--out", str(out)]
    runs["missing data"] = [str(MODEL), str(tmp_path / "nope.npz"), "--out", str(out)]
    runs["usage"] = [str(MODEL)]
    runs["--out is a file"] = [str(MODEL), str(DATA), "--out", str(a_file)]
    words = {name: w for name, (_, w) in cases.items()}
    words.update({"missing model": ["MODEL", "no such file"], "missing data": ["DATA", "no such file"],
                  "usage": ["required"], "--out is a file": ["--out", "not a directory"]})
    before = _sha(MODEL)
    res = subprocess.run([sys.executable, "-c", _PRE_TF, json.dumps(list(runs.values()))], capture_output=True,
                         text=True, cwd=REPO_ROOT, env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    for name, (rc, err, stdout) in zip(runs, report["results"]):
        assert stdout == "", name
        _assert_refused(rc, err, out, *words[name])
    assert report["imported"] == [], "TensorFlow (or Keras, matplotlib) was imported to refuse bad arguments"
    assert a_file.read_text() == "keep me" and _sha(MODEL) == before


def test_fail_on_unknown_code_exits_before_importing_tensorflow(tmp_path):
    """The real entry point, with Python's import log: no TensorFlow module is imported."""
    out = tmp_path / "out"
    res = _cli(MODEL, DATA, "--out", out, "--fail-on", "bn_stale,nope", python_flags=("-X", "importtime"))
    imports = [line for line in res.stderr.splitlines() if line.startswith("import time:")]
    assert imports, "no import log"
    assert not any(line.rstrip().endswith(("| tensorflow", "| keras")) for line in imports)
    stderr = "\n".join(line for line in res.stderr.splitlines() if not line.startswith("import time:"))
    _assert_refused(res.returncode, stderr, out, "--fail-on", "nope")


# ---------------------------------------------------------------- refused after loading (in-process)


def _zip_not_keras(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a model")
    return path


CASES = {
    "model is a directory": (lambda t: (t, DATA), ("MODEL", "directory")),
    "model is text": (lambda t: ((t / "m.keras").write_text("hello") and t / "m.keras", DATA),
                      ("MODEL", "not a Keras model")),
    "model is a zip but not Keras": (lambda t: (_zip_not_keras(t / "z.keras"), DATA), ("MODEL", "not")),
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
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, case):
    """In-process (the subprocess behaviour is covered above): main() returns 2 with one stderr line."""
    make, words = CASES[case]
    out = tmp_path / "out"
    rc, stdout, err = _main(capsys, *make(tmp_path), "--out", out)
    _assert_refused(rc, err, out, *words)
    assert stdout == ""


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        D.main([str(MODEL)])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_help_lists_the_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        D.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(code in text for code in CODES) and "--fail-on" in text and "--unsafe" in text


def test_console_script_is_declared():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'workbook-diagnose = "helpers.diagnose:main"' in text


def test_a_failure_of_the_diagnosis_itself_exits_3_with_one_line(tiny, tmp_path, capsys, monkeypatch):
    """A check that raises (a bug, or a model the tool cannot handle) is neither bad input (2) nor a finding
    (1): exit 3, one line naming the error, and no report."""
    import helpers.diagnose.bn as bn_check

    def broken(*args, **kwargs):
        raise RuntimeError("a check failed")
    monkeypatch.setattr(bn_check, "analyse", broken)
    out = tmp_path / "out"
    rc, _, err = _main(capsys, tiny["model"], tiny["data"], "--out", out, "--only", "bn", "--fail-on", "error")
    assert rc == 3 and "RuntimeError: a check failed" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
