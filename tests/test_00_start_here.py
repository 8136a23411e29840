import pytest

from helpers.timeseries import bayes_accuracy
from notebook_runs import SEEDS, run_findings

STEM = "00_start_here"


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_replicas_split_the_batch_between_them(findings, seed):
    f = findings(STEM, seed)
    doc = run_findings(STEM, seed)
    # one replica per logical device the parameter asked for
    assert f["replicas_in_sync"] == doc["parameters"]["logical_devices"]
    # tf.distribute's SUM over the replicas' shares of the batch 1..12 equals its sum computed here
    assert f["replica_sum"] == sum(range(1, 13))


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_synthetic_data_hold_their_labels_where_the_lessons_say(findings, seed):
    f = findings(STEM, seed)
    # lesson 03: a rule on the vibration level, blind to the labels, comes within 5 points of the
    # analytic best accuracy of the generator (a formula, not a run)
    assert abs(f["windows_level_rule_accuracy"] - bayes_accuracy()) < 0.05
    # lesson 06: |value| ranks the anomalous steps poorly, the local shape well
    assert f["anomaly_pr_auc_value"] < 0.5 < f["anomaly_pr_auc_shape"]


@pytest.mark.parametrize("seed", SEEDS[:1])
def test_widget_latencies_are_recorded_for_bench(findings, seed):
    # `make bench` judges them; no time is asserted here
    assert {"widget_digit_median_s", "widget_digit_p95_s"}.issubset(findings(STEM, seed))


@pytest.mark.parametrize("params", [{"logical_devices": 0}, {"logical_devices": 9}, {"seed": -1},
                                    {"seed": "abc"}])
def test_bad_parameters_stop_in_setup(rejected, params):
    rejected(STEM, params)
