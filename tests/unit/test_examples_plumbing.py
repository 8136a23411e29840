"""The plumbing lesson 08's page calls from helpers/examples.py: headings, PR-AUC, the layer walk, the
statistics gap, the plot."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import examples as ex


def test_notebook_headings_reads_a_lessons_sections():
    heads = ex.notebook_headings("08_diagnose_your_model.ipynb")
    assert "1. Run the diagnosis" in heads and "Summary" in heads
    assert ex.notebook_headings("99_no_such_lesson.ipynb") == set()


def test_average_precision_matches_hand_computed_values():
    y = np.array([[1, 0, 1, 0]])
    # ranked 0.9 (hit), 0.8 (miss), 0.7 (hit), 0.1: precision 1 at recall 1/2, 2/3 at recall 1
    assert ex.average_precision(y, np.array([[0.9, 0.8, 0.7, 0.1]])) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # all scores tied: one threshold, precision = the positive fraction
    assert ex.average_precision(y, np.zeros((1, 4))) == pytest.approx(0.5)
    assert ex.average_precision(np.zeros((2, 3)), np.ones((2, 3))) == 0.0      # no positives
    # against the definition, threshold by threshold, with ties
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, (5, 40)), np.round(rng.random((5, 40)), 1)
    area, recall_before = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        picked = scores >= t
        recall = labels[picked].sum() / labels.sum()
        area += labels[picked].mean() * (recall - recall_before)
        recall_before = recall
    assert ex.average_precision(labels, scores) == pytest.approx(area)


def test_nested_layers_walks_nested_models_depth_first():
    import keras
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner_dense")], name="inner")
    inp = keras.Input((3,))
    outer = keras.Model(inp, keras.layers.Dense(1, name="head")(inner(inp)))
    names = [layer.name for layer in ex.nested_layers(outer)]
    assert names[-3:] == ["inner", "inner_dense", "head"]
    assert list(ex.nested_layers(object())) == []


def test_applied_statistics_gap_measures_the_divisor_and_the_mean():
    import keras
    def bn_model():
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.BatchNormalization(epsilon=0.0)(keras.layers.Dense(4)(inp)))
    exact, other = bn_model(), bn_model()
    assert ex.applied_statistics_gap(other, exact) == 0.0                      # both 0 and 1
    bn = other.layers[-1]
    bn.moving_variance.assign(np.full(4, 4.0, "float32"))                      # divisor doubled
    assert ex.applied_statistics_gap(other, exact) == pytest.approx(np.log(2.0))
    bn.moving_mean.assign(np.full(4, 3.0, "float32"))                          # 3 exact divisors off
    assert ex.applied_statistics_gap(other, exact) == pytest.approx(3.0)


def test_plot_stored_against_exact_titles_the_verdict():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = ex.plot_stored_against_exact("norm1", np.array([1.0, 4.0]), np.array([1.0, 1.0]), 1.2, True)
    assert "norm1" in fig._suptitle.get_text() and "OFF" in fig._suptitle.get_text()
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    plt.close(fig)
