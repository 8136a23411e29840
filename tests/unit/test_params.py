"""The parameter rules: every bad value of issue 12 §4 is rejected with a message naming the
parameter, the value and what is allowed; good values come back cleaned."""
import math

import pytest

from helpers.workbook.params import (INT64_MAX, Bool, Choice, Float, FloatList, Int, IntList, ListOf,
                                     ParameterError, Text, check_cost, check_relation, unknown_parameter_error,
                                     validate)

HUGE = 10**400  # more than a float or an int64 can hold


def _message(rule, name, value) -> str:
    with pytest.raises(ParameterError) as err:
        rule.check(name, value)
    return str(err.value)


@pytest.mark.parametrize("bad", [0, -3, 51, "abc", "7", math.nan, math.inf, -math.inf, [4], [[4]], (4,),
                                 True, False, 2.5, None, HUGE, -HUGE, {"a": 1}])
def test_int_rejects_with_name_value_and_range(bad):
    text = _message(Int(1, 50), "epochs", bad)
    assert "'epochs'" in text and "[1, 50]" in text, text
    assert text.startswith("parameter 'epochs' = "), text


def test_int_names_the_type_of_a_wrong_value():
    assert "(bool)" in _message(Int(1, 50), "epochs", True)
    assert "(NoneType)" in _message(Int(1, 50), "epochs", None)
    assert "(list)" in _message(Int(1, 50), "epochs", [[1, 2]])


def test_int_accepts_integral_values():
    assert Int(1, 50).check("epochs", 7) == 7
    assert Int(1, 50).check("epochs", 7.0) == 7   # papermill/YAML may pass 7.0
    assert Int(1).check("n", 10**9) == 10**9


def test_an_open_int_range_still_stops_at_int64():
    assert Int(0).check("seed", INT64_MAX) == INT64_MAX
    text = _message(Int(0), "seed", HUGE)
    assert "'seed'" in text and str(INT64_MAX) in text
    assert "-9223372036854775808" in _message(Int(), "offset", -HUGE)


def test_a_huge_value_is_shortened_in_the_message():
    text = _message(Int(1, 50), "epochs", HUGE)
    assert len(text) < 250 and "..." in text
    # an int with more digits than Python prints (over 4,300) is described, not printed
    text = _message(Int(1, 50), "epochs", 10**5000)
    assert "digits" in text and "'epochs'" in text


@pytest.mark.parametrize("bad", [0.0, -1e-3, math.nan, math.inf, -math.inf, "0.1", True, 1.5, None, HUGE,
                                 -HUGE, [0.1], [[0.1]]])
def test_open_interval_float(bad):
    text = _message(Float(0, 1, lo_open=True), "learning_rate", bad)
    assert "'learning_rate'" in text and "(0, 1]" in text, text


def test_unbounded_float_still_rejects_non_finite_and_huge():
    for bad in (math.inf, -math.inf, math.nan, HUGE):
        assert "'x'" in _message(Float(), "x", bad)
    assert Float().check("x", -1e300) == -1e300


def test_float_accepts_bounds_and_ints():
    assert Float(0, 1, lo_open=True).check("lr", 1) == 1.0
    assert Float(0, 1).check("p", 0) == 0.0
    assert isinstance(Float(0, 1).check("p", 1), float)


def test_lists():
    rule = IntList(2, 64, unique=True)
    assert rule.check("batch_sizes", [2, 4, 32]) == [2, 4, 32]
    assert rule.check("batch_sizes", (2, 4)) == [2, 4]
    for bad in [[], [1, 2], [2, 2], 4, "2,4", None, [2, "x"], [2, math.nan], [[2, 4]], [2, True], [2, HUGE]]:
        with pytest.raises(ParameterError, match="batch_sizes"):
            rule.check("batch_sizes", bad)
    assert FloatList(0, lo_open=True).check("clip_norms", [0.1, 1]) == [0.1, 1.0]
    with pytest.raises(ParameterError, match="clip_norms"):
        FloatList(0, lo_open=True).check("clip_norms", [0.1, 0])


@pytest.mark.parametrize("items, position", [([2, "x"], 1), ([2, 4, math.nan], 2), ([[2, 4], 8], 0),
                                             ([2, 4, 8, 16, None], 4), ([2, 4, True], 2), ([HUGE], 0),
                                             ([2, 4, 1], 2), ([2, math.inf], 1)])
def test_a_bad_list_item_is_named_by_its_position(items, position):
    text = _message(IntList(2, 64), "batch_sizes", items)
    assert text.startswith(f"parameter 'batch_sizes[{position}]' = "), text
    assert f"item {position} of 'batch_sizes' = " in text and "an integer in [2, 64]" in text, text
    assert repr(items) in text or len(repr(items)) > 80, "the whole list is shown (shortened if long)"
    assert "a list of at least 1" in text, "the message also says what the whole list must be"


def test_list_length_and_repeats_are_explained():
    assert "at most 3" in _message(IntList(1, 9, max_len=3), "sizes", [1, 2, 3, 4])
    assert "at least 2" in _message(IntList(1, 9, min_len=2), "sizes", [1])
    assert "repeated: 4" in _message(IntList(1, 9, unique=True), "sizes", [4, 2, 4])
    assert ListOf(Int(0, 3), min_len=0).check("empty_ok", []) == []


def test_choice_and_bool():
    assert Choice(("iid", "grouped")).check("order", "iid") == "iid"
    with pytest.raises(ParameterError, match="one of 'iid', 'grouped'"):
        Choice(("iid", "grouped")).check("order", "sorted")
    for bad in (None, ["iid"], True, math.nan, 1):
        assert "'order'" in _message(Choice(("iid", "grouped")), "order", bad)
    assert Choice((1, 2)).check("k", 2) == 2
    assert "'k'" in _message(Choice((0, 1)), "k", True), "True == 1, but a bool is not an int option"
    assert Bool().check("flag", False) is False
    for bad in (1, 0, "True", None, math.nan, [True]):
        assert "True or False" in _message(Bool(), "flag", bad)


def test_validate_reports_the_first_bad_parameter_and_rejects_bad_declarations():
    with pytest.raises(ParameterError, match="'epochs' = 0"):
        validate({"seed": (0, Int(0)), "epochs": (0, Int(1, 50))})
    with pytest.raises(TypeError, match="declare 'epochs'"):
        validate({"epochs": 5})
    assert validate({"seed": (3.0, Int(0)), "lr": (1, Float(0, 1))}) == {"seed": 3, "lr": 1.0}


def test_check_relation():
    check_relation(True, "never raised")
    with pytest.raises(ParameterError, match="fewer than"):
        check_relation(False, "anomalies_per_series = 9 must be fewer than timesteps = 8")


def test_check_cost_names_the_parameters_and_the_limit():
    assert check_cost(5_000, 10_000, {"epochs": 5, "steps": 1000}) == 5_000
    with pytest.raises(ParameterError) as err:
        check_cost(50 * 20_000 / 1, 200_000, {"epochs": 50, "n_series": 20_000, "batch_size": 1})
    text = str(err.value)
    assert "epochs = 50" in text and "n_series = 20000" in text and "batch_size = 1" in text
    assert "1e+06 training steps" in text and "at most 2e+05" in text
    with pytest.raises(ParameterError, match="too large"):
        check_cost(math.inf, 1.0, {"epochs": 1}, unit="GiB")
    with pytest.raises(ParameterError, match="too large"):
        check_cost(math.nan, 1.0, {"epochs": 1})


def test_unknown_names_are_listed_with_the_allowed_ones():
    err = unknown_parameter_error(["lerning_rate"], ["seed", "learning_rate", "epochs"], "01_x")
    text = str(err)
    assert isinstance(err, ParameterError)
    assert "'lerning_rate'" in text and "did you mean 'learning_rate'?" in text
    assert "expected one of 'seed', 'learning_rate', 'epochs'" in text and "01_x" in text
    text = str(unknown_parameter_error(["zzz", "qqq"], ["seed"]))
    assert "parameters 'zzz', 'qqq'" in text and "did you mean" not in text


def test_text():
    assert Text().check("model_path", "") == "" and Text().check("model_path", "a.keras") == "a.keras"
    for bad in (None, 1, 1.5, True, ["a.keras"], math.nan):
        assert "'model_path'" in _message(Text(), "model_path", bad)
    assert "non-empty string" in _message(Text(allow_empty=False), "name", "")
    assert "at most 3 characters" in _message(Text(max_len=3), "name", "abcd")
