import pytest

from notebook_runs import SEEDS, run_findings

STEM = "00_start_here"


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_environment_and_data_findings(findings, seed):
    f = findings(STEM, seed)
    doc = run_findings(STEM, seed)
    # the logical devices the default parameter asks for exist in the kernel, and no GPU is claimed on this CPU box
    assert doc["parameters"]["logical_devices"] == f["logical_cpu_devices"] == 2
    # the split data/README.md documents: 1,438 train / 359 test of the 1,797 digits
    assert (f["digits_train"], f["digits_test"]) == (1438, 359)
    # widget latencies are recorded for `make bench` (which judges them; no time is asserted here)
    assert {"widget_digit_median_s", "widget_digit_p95_s"}.issubset(f)


@pytest.mark.parametrize("params", [{"logical_devices": 0}, {"logical_devices": 9}, {"seed": -1},
                                    {"seed": "abc"}])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
