"""helpers.diagnose on a held-out zoo (tests/diagnose_zoo.py): models and data the tool was not written
against. Each case must give the right codes (expect), none of the wrong verdicts or harmful advice
(forbid), name the right BN layer (worst_layer, off_layers), and fix only what recomputing improves.

The zoo is built once, in a subprocess (so the custom layer it registers is not registered here), into a
temporary folder; set DIAGNOSE_ZOO_DIR to build it there once and reuse it on later runs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.workbook.environment import quiet_tensorflow
from helpers.workbook.notebooks import REPO_ROOT

quiet_tensorflow()

import diagnose_zoo as Z  # noqa: E402  (tests/ is on sys.path, as for notebook_runs)

ZOO_SCRIPT = Path(Z.__file__).resolve()


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Z.Case]:
    reuse = os.environ.get("DIAGNOSE_ZOO_DIR")
    out = Path(reuse) if reuse else tmp_path_factory.mktemp("diagnose_zoo")
    if not (out / "manifest.json").exists():
        res = subprocess.run([sys.executable, str(ZOO_SCRIPT), str(out)], capture_output=True, text=True,
                             cwd=REPO_ROOT, env=_env(), timeout=900)
        assert res.returncode == 0, f"building the zoo failed:\n{res.stderr[-4000:]}"
    return Z.load_zoo(out)


class Outcome:
    """One case's diagnosis: `error` (the DiagnoseError without the case's keywords, when it has some that
    are needed), then `diag` (with them) or `run_error`."""
    error: Exception | None = None
    diag = None
    run_error: Exception | None = None


@pytest.fixture(scope="module")
def outcome(zoo):
    from helpers.diagnose import DiagnoseError, diagnose
    cache: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in cache:
            case, o = zoo[name], Outcome()
            if case.error_without_kwargs and case.kwargs:
                # before the run with imports=: that registers the custom layer in this process
                try:
                    diagnose(case.model_path, case.data_path, progress=False)
                except DiagnoseError as err:
                    o.error = err
            try:
                o.diag = diagnose(case.model_path, case.data_path, progress=False, **case.kwargs)
            except DiagnoseError as err:
                o.run_error = err
            cache[name] = o
        return cache[name]
    return get


def _short(name) -> str:
    """A layer as the report names it ('stage1/block1/block1_bn1' or 'block1_bn1') -> its own name."""
    return str(name).replace("\\", "/").split("/")[-1]


def describe(diag) -> str:
    """What the tool said: codes, verdict, and the BN table (for the failure message)."""
    r = diag.report
    bn = r.get("bn_statistics") or {}
    lines = [f"codes: {diag.codes}", f"verdict: {r.get('verdict')}",
             f"bn: stored={bn.get('metric_as_stored')} recomputed={bn.get('metric_recomputed')} "
             f"improves={bn.get('improves')} worst_layer={bn.get('worst_layer')} off_layers={bn.get('off_layers')}"]
    for layer in bn.get("layers") or []:
        lines.append("  " + json.dumps(layer, default=str)[:300])
    for f in r.get("findings", []):
        lines.append(f"  [{f.get('severity')}] {f.get('code')}: {str(f.get('message'))[:300]}")
    return "\n".join(lines)


def _diag(outcome, zoo, name):
    o = outcome(name)
    assert o.run_error is None, f"{name}: DiagnoseError with {zoo[name].kwargs}: {o.run_error}"
    return o.diag


RUNS = [n for n in Z.CASE_NAMES if n != "savedmodel_dir"]
WITH_ERRORS = ["custom_layer", "lambda_layer", "savedmodel_dir"]
#: the cases with a worst_layer / off_layers expectation (checked against the built zoo below)
LAYER_CASES = ["mobilenet_healthy", "one_layer_variance_x1_5", "one_layer_variance_x4", "mean_shift_three_layers"]


def test_the_zoo_holds_every_case(zoo):
    assert set(zoo) == set(Z.CASE_NAMES)
    for case in zoo.values():
        assert Path(case.model_path).exists() and Path(case.data_path).exists(), case.name
    assert sorted(LAYER_CASES) == sorted(n for n, c in zoo.items() if c.worst_layer is not None
                                         or c.off_layers is not None or c.off_layers_include)
    assert sorted(WITH_ERRORS) == sorted(n for n, c in zoo.items() if c.error_without_kwargs)


def _ends_cleanly(message: str) -> bool:
    """Not cut mid-word: no ellipsis right after a letter, no dangling partial token."""
    text = message.rstrip()
    return not re.search(r"[A-Za-z0-9_](…|\.\.\.)$", text)


@pytest.mark.parametrize("name", WITH_ERRORS)
def test_refusals_say_what_to_do(zoo, outcome, name):
    case = zoo[name]
    o = outcome(name)
    err = o.error if case.kwargs else o.run_error
    assert err is not None, f"{name}: expected a DiagnoseError naming {case.error_without_kwargs!r}, got " \
                            f"{'a diagnosis: ' + describe(o.diag) if o.diag is not None else 'none'}"
    message = str(err)
    assert "\n" not in message.strip(), f"more than one line: {message!r}"
    assert case.error_without_kwargs in message, message
    assert _ends_cleanly(message), f"cut mid-word: {message!r}"


@pytest.mark.parametrize("name", ["custom_layer"])
def test_refusal_names_the_missing_class(zoo, outcome, name):
    """The message names the class that is not registered (not a Keras class that merely failed with it)."""
    case = zoo[name]
    err = outcome(name).error
    assert err is not None
    for word in case.error_mentions:
        assert word in str(err), str(err)


@pytest.mark.parametrize("name", RUNS)
def test_codes(zoo, outcome, name):
    from helpers.diagnose.codes import CODES
    case = zoo[name]
    diag = _diag(outcome, zoo, name)
    codes = set(diag.codes)
    assert codes <= set(CODES), f"unknown codes {codes - set(CODES)}"
    assert [f["code"] for f in diag.report["findings"]] == list(diag.codes)
    missing = [c for c in case.expect if c not in codes]
    wrong = [c for c in case.forbid if c in codes]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if wrong:
        problems.append(f"forbidden {wrong}")
    if case.expect_any and not codes & set(case.expect_any):
        problems.append(f"none of {case.expect_any}")
    assert not problems, f"{name} ({case.notes}): {'; '.join(problems)}\n{describe(diag)}"


@pytest.mark.parametrize("name", LAYER_CASES)
def test_bn_layers_named(zoo, outcome, name):
    case = zoo[name]
    diag = _diag(outcome, zoo, name)
    bn = diag.report.get("bn_statistics")
    assert bn is not None, f"{name}: no bn_statistics\n{describe(diag)}"
    off = [_short(n) for n in bn.get("off_layers") or []]
    if case.worst_layer is not None:
        assert _short(bn.get("worst_layer")) == case.worst_layer, describe(diag)
    if case.off_layers is not None:
        assert sorted(off) == sorted(case.off_layers), describe(diag)
        if case.off_layers and case.worst_layer is None:
            assert _short(bn.get("worst_layer")) in case.off_layers, describe(diag)
    for layer in case.off_layers_include:
        assert layer in off, describe(diag)


def _load_xy(data_path):
    with np.load(data_path) as f:
        return f["x_test"].astype(np.float32), f["y_test"]


def _score(case, model) -> float:
    """Higher is better: accuracy, or minus the MSE."""
    x, y = _load_xy(case.data_path)
    if case.task == "regression":
        return -Z.mse(model, x, y)
    return Z.accuracy(model, x, y)


@pytest.mark.parametrize("name", RUNS)
def test_fix_only_what_recomputing_improves(zoo, outcome, name, tmp_path):
    import keras
    case = zoo[name]
    diag = _diag(outcome, zoo, name)
    target = tmp_path / "fixed.keras"
    written = diag.fix(target)
    stale = "bn_stale" in diag.codes
    assert (written is not None) == stale, f"fix returned {written} with codes {diag.codes}"
    if written is None:
        assert not target.exists() and not list(tmp_path.iterdir()), "fix returned None but wrote something"
    else:
        assert Path(written).exists()
    if case.fix is False:
        assert written is None, f"{name}: fix wrote {written}; it must not ({case.notes})\n{describe(diag)}"
    if case.fix is True:
        assert written is not None, f"{name}: fix wrote nothing\n{describe(diag)}"
        load = dict(safe_mode=False) if case.kwargs.get("unsafe") else {}
        original = keras.saving.load_model(case.model_path, compile=False, **load)
        fixed = keras.saving.load_model(written, compile=False, **load)
        before, after = _score(case, original), _score(case, fixed)
        assert after > before, f"{name}: the fixed file scores {after:.4f}, the original {before:.4f}"


def test_regression_metric_is_lower_is_better(zoo, outcome):
    """The stale regressor: recomputing lowers the MSE, and the tool calls that an improvement."""
    case = zoo["regressor_mse_stale"]
    diag = _diag(outcome, zoo, case.name)
    bn = diag.report["bn_statistics"]
    assert bn["metric_recomputed"] < bn["metric_as_stored"], describe(diag)
    assert bn["improves"] is True, describe(diag)
    p = case.premise
    assert bn["metric_as_stored"] == pytest.approx(p["stored"], rel=0.05), (bn, p)
    assert bn["metric_recomputed"] == pytest.approx(p["recomputed"], rel=0.05), (bn, p)


@pytest.mark.parametrize("name", ["frozen_bn_transfer", "uint8_scale", "untrained_uncompiled"])
def test_no_recalibration_advice(zoo, outcome, name):
    """Where recomputing the statistics is the wrong remedy, no finding may advise it."""
    diag = _diag(outcome, zoo, name)
    for f in diag.report["findings"]:
        if f["severity"] in ("error", "warning"):
            text = str(f.get("message", "")).lower()
            assert "--fix" not in text and "recalibrat" not in text and "precise_bn" not in text, \
                f"{name}: {f['code']} advises recomputing: {f['message']}"


def test_all_frozen_model_is_not_called_current(zoo, outcome):
    """Every BN layer of the transfer model is frozen and far from the new data's statistics (the premise's
    applied errors 0.47-1.9): 'stored BN statistics match the training data's' would be vacuous, and its
    'recomputing moves accuracy 0.961 -> 0.961' hides that recomputing them costs 0.13."""
    case = zoo["frozen_bn_transfer"]
    diag = _diag(outcome, zoo, case.name)
    assert "bn_current" not in diag.codes, describe(diag)


def test_frozen_layers_table_shows_their_mismatch(zoo, outcome):
    """The BN table's row for a frozen layer either leaves its error unmeasured (None) or shows the mismatch
    with the data (premise: 90th-percentile applied error 0.47-1.9 per layer, all above the 10 % line), not
    stored-vs-stored zeros."""
    case = zoo["frozen_bn_transfer"]
    diag = _diag(outcome, zoo, case.name)
    rows = {_short(r["name"]): r for r in (diag.report["bn_statistics"] or {}).get("layers", [])}
    for name, measured in case.premise["applied_errors"].items():
        shown = rows[name].get("error_p90")
        assert shown is None or (shown > Z.APPLIED_TOLERANCE) == (measured > Z.APPLIED_TOLERANCE), \
            f"{name}: table says error_p90={shown}, measured {measured}\n{describe(diag)}"


def test_premises_hold(zoo):
    """The numbers the builders measured (also asserted there): the zoo is what it claims."""
    p = {n: c.premise for n, c in zoo.items()}
    for n in ("nested_resnet_stale", "label_smoothed", "synchronized_bn", "mean_shift_three_layers",
              "one_layer_variance_x4"):
        stored = p[n].get("stored", p[n].get("test_acc_perturbed"))
        recomputed = p[n].get("recomputed", p[n].get("test_acc_recomputed"))
        assert recomputed > stored, (n, p[n])
    assert p["frozen_bn_transfer"]["recomputed"] < p["frozen_bn_transfer"]["stored"] - 0.05
    assert p["regressor_mse_stale"]["recomputed"] < p["regressor_mse_stale"]["stored"]
    assert p["one_layer_variance_x1_5"]["changed_layers"] == ["bn_c"]
    for n in ("small_batch_dense_bn", "small_batch_dense_bn_momentum_0_9"):
        assert abs(p[n]["median_var_ratio_stored_over_exact"] - 0.75) < 0.04, p[n]
    assert p["mobilenet_healthy"]["max_applied_error"] < 1e-3
    assert p["uint8_scale"]["first_bn_log_divisor_uint8"] > 1.0 > p["frozen_bn_transfer"]["first_bn_log_divisor"]


# ---------------------------------------------------------------- the command line


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "helpers.diagnose", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env=_env(), timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, f"expected one line on stderr, got:\n{stderr[-3000:]}"
    return lines[0]


@pytest.mark.parametrize("name,rc", [("nested_resnet_stale", 1), ("mobilenet_healthy", 0)])
def test_cli_fail_on_bn_stale(zoo, tmp_path, name, rc):
    case = zoo[name]
    res = _cli(case.model_path, case.data_path, "--out", tmp_path / "out", "--fail-on", "bn_stale", "--quiet",
               *case.cli_args)
    assert res.returncode == rc, f"{name}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"


def test_cli_format_json_prints_json(zoo, tmp_path):
    case = zoo["regressor_mse_stale"]
    res = _cli(case.model_path, case.data_path, "--out", tmp_path / "out", "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert "bn_stale" in [f["code"] for f in report["findings"]], res.stdout[-3000:]


@pytest.mark.parametrize("name,word", [("savedmodel_dir", ".keras"), ("lambda_layer", "--unsafe"),
                                       ("custom_layer", "--import")])
def test_cli_refusals_exit_2_with_one_line(zoo, tmp_path, name, word):
    case = zoo[name]
    out = tmp_path / "out"
    res = _cli(case.model_path, case.data_path, "--out", out)
    assert res.returncode == 2, f"{name}: exit {res.returncode}\n{res.stderr[-3000:]}"
    line = _one_line(res.stderr)
    assert word in line, line
    assert _ends_cleanly(line), line
    assert not out.exists() or not any(out.iterdir()), "something was written"


@pytest.mark.parametrize("name", ["custom_layer", "lambda_layer"])
def test_cli_runs_with_the_flag(zoo, tmp_path, name):
    case = zoo[name]
    res = _cli(case.model_path, case.data_path, "--out", tmp_path / "out", "--quiet", *case.cli_args)
    assert res.returncode == 0, f"{name} with {case.cli_args}: exit {res.returncode}\n{res.stderr[-3000:]}"
    assert (tmp_path / "out" / "report.json").exists()


def test_cli_fix_on_the_frozen_model_writes_nothing(zoo, tmp_path):
    case = zoo["frozen_bn_transfer"]
    fixed = tmp_path / "fixed.keras"
    res = _cli(case.model_path, case.data_path, "--out", tmp_path / "out", "--fix", fixed, "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not fixed.exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "bn_stale" not in [f["code"] for f in report["findings"]]
