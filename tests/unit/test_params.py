import math

import pytest

from helpers.workbook.params import (Bool, Choice, Float, FloatList, Int, IntList, ParameterError, check_relation,
                            validate)


@pytest.mark.parametrize("bad", [0, -3, "abc", math.nan, [4], True, 2.5, None, 51])
def test_int_rejects_with_name_value_and_range(bad):
    with pytest.raises(ParameterError) as err:
        Int(1, 50).check("epochs", bad)
    text = str(err.value)
    assert "'epochs'" in text and repr(bad) in text and "[1, 50]" in text


def test_int_accepts_integral_values():
    assert Int(1, 50).check("epochs", 7) == 7
    assert Int(1, 50).check("epochs", 7.0) == 7   # papermill/YAML may pass 7.0
    assert Int(1).check("n", 10**9) == 10**9


@pytest.mark.parametrize("bad", [0.0, -1e-3, math.nan, math.inf, "0.1", True, 1.5])
def test_open_interval_float(bad):
    with pytest.raises(ParameterError, match="learning_rate"):
        Float(0, 1, lo_open=True).check("learning_rate", bad)


def test_float_accepts_bounds_and_ints():
    assert Float(0, 1, lo_open=True).check("lr", 1) == 1.0
    assert Float(0, 1).check("p", 0) == 0.0


def test_lists():
    rule = IntList(2, 64, unique=True)
    assert rule.check("batch_sizes", [2, 4, 32]) == [2, 4, 32]
    for bad in [[], [1, 2], [2, 2], 4, "2,4", [2, "x"], [2, math.nan]]:
        with pytest.raises(ParameterError, match="batch_sizes"):
            rule.check("batch_sizes", bad)
    assert FloatList(0, lo_open=True).check("clip_norms", [0.1, 1]) == [0.1, 1.0]
    with pytest.raises(ParameterError, match="clip_norms"):
        FloatList(0, lo_open=True).check("clip_norms", [0.1, 0])


def test_choice_and_bool():
    assert Choice(("iid", "grouped")).check("order", "iid") == "iid"
    with pytest.raises(ParameterError, match="one of 'iid', 'grouped'"):
        Choice(("iid", "grouped")).check("order", "sorted")
    assert Bool().check("flag", False) is False
    with pytest.raises(ParameterError):
        Bool().check("flag", 1)


def test_validate_reports_the_first_bad_parameter_and_rejects_bad_declarations():
    with pytest.raises(ParameterError, match="'epochs' = 0"):
        validate({"seed": (0, Int(0)), "epochs": (0, Int(1, 50))})
    with pytest.raises(TypeError, match="declare 'epochs'"):
        validate({"epochs": 5})


def test_check_relation():
    check_relation(True, "never raised")
    with pytest.raises(ParameterError, match="fewer than"):
        check_relation(False, "anomalies_per_series = 9 must be fewer than timesteps = 8")
