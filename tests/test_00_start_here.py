import pytest

from notebook_runs import SEEDS

STEM = "00_start_here"


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_environment_and_data_findings(findings, seed):
    f = findings(STEM, seed)
    assert f["logical_cpu_devices"] == 2 and f["cpu_cores"] >= 1
    assert f["digits_train"] == 1438 and f["digits_test"] == 359
    assert f["widget_digit_median_s"] <= 0.3


@pytest.mark.parametrize("params", [{"logical_devices": 0}, {"logical_devices": 9}, {"seed": -1},
                                    {"seed": "abc"}])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
