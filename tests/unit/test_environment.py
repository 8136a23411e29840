"""setup() refuses a parameter name the notebook does not declare (papermill only warns about it)."""
import pytest

import helpers.workbook.environment as env
from helpers.workbook.params import Float, Int, ParameterError

# What papermill 2.x writes into the cell it injects after the `parameters` cell.
INJECTED = "# Parameters\nlerning_rate = 0.1\nseed = 3\nclip_norms = [float('nan'), 1.0]\n"


def test_the_names_papermill_injected_are_read_from_the_kernel_history():
    history = ["", "seed = 0\nlearning_rate = 0.1\n", INJECTED, "from helpers import setup"]
    assert env.injected_parameter_names(history) == ["lerning_rate", "seed", "clip_norms"]


def test_the_last_injected_cell_counts_and_lookalikes_do_not():
    later = "# Parameters\nepochs = 2\n"
    assert env.injected_parameter_names(["", INJECTED, later]) == ["epochs"]
    assert env.injected_parameter_names(["# Parameters of the model\nx = 1\n"]) is None
    assert env.injected_parameter_names(["seed = 0"]) is None
    assert env.injected_parameter_names([]) is None
    assert env.injected_parameter_names(["# Parameters\nthis is not python("]) is None


def test_outside_a_kernel_there_is_no_history():
    assert env.injected_parameter_names() is None  # pytest is not an IPython kernel


def test_setup_rejects_an_unknown_name_before_any_work(monkeypatch):
    monkeypatch.setattr(env, "injected_parameter_names", lambda history=None: ["seed", "lerning_rate"])
    monkeypatch.setattr(env, "quiet_tensorflow", lambda: pytest.fail("setup went on after a bad name"))
    with pytest.raises(ParameterError) as err:
        env.setup("01_x", seed=(0, Int(0, 10)), learning_rate=(0.1, Float(0, 1)), verbose=False)
    text = str(err.value)
    assert "unknown parameter 'lerning_rate' (did you mean 'learning_rate'?)" in text
    assert "expected one of 'seed', 'learning_rate'" in text
    assert err.value.__cause__ is None and err.value.__suppress_context__, "one short traceback"


def test_setup_counts_a_declared_logical_devices_parameter_as_known(monkeypatch):
    monkeypatch.setattr(env, "injected_parameter_names", lambda history=None: ["logical_devices", "sed"])
    monkeypatch.setattr(env, "quiet_tensorflow", lambda: pytest.fail("setup went on after a bad name"))
    with pytest.raises(ParameterError, match=r"unknown parameter 'sed' \(did you mean 'seed'\?\).*"
                                             r"'seed', 'logical_devices'"):
        env.setup("00_x", seed=(0, Int(0, 10)), logical_devices=(2, Int(1, 8)), verbose=False)


def test_setup_checks_values_after_names(monkeypatch):
    monkeypatch.setattr(env, "injected_parameter_names", lambda history=None: ["seed"])
    monkeypatch.setattr(env, "quiet_tensorflow", lambda: pytest.fail("setup went on after a bad value"))
    with pytest.raises(ParameterError, match=r"'seed' = True \(bool\)"):
        env.setup("00_x", seed=(True, Int(0, 10)), verbose=False)
    with pytest.raises(ParameterError, match="'logical_devices' = 9"):
        env.setup("00_x", seed=(0, Int(0, 10)), logical_devices=9, verbose=False)


def test_check_parameter_names_accepts_declared_names():
    env.check_parameter_names(["seed"], ["seed", "epochs"])
    env.check_parameter_names(None, ["seed"])
    with pytest.raises(ParameterError, match="'Seed'"):
        env.check_parameter_names(["Seed"], ["seed"])
