"""helpers.batch_size: the figures and tables of lesson 01 (regimes, steps to target, tuned rates)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from helpers.batch_size import (RegimeRun, TargetRun, median_steps_table, plot_regimes, regime_table,
                                show_steps_to_target, tuned_rate_table)


def _regime(batch_size, losses):
    e = np.arange(len(losses), dtype=float)
    return RegimeRun(batch_size, 0.1, e, e * (100 // batch_size), e * 0.5, np.asarray(losses))


def test_regimes_are_drawn_three_ways_and_tabulated():
    regimes = {"full": _regime(100, [2.0, 1.9, 1.8]), "mini": _regime(10, [2.0, 0.5, 0.2])}
    plot_regimes(regimes, finding="mini wins")
    fig = plt.gcf()
    assert len(fig.axes) == 3 and fig._suptitle.get_text() == "mini wins"
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]
    xs = [list(ax.lines[1].get_xdata()) for ax in fig.axes]           # the mini run: epochs, steps, seconds
    assert xs == [[0, 1, 2], [0, 10, 20], [0, 0.5, 1.0]]
    plt.close(fig)
    rows = regime_table(regimes, 100).records()
    assert rows[1]["steps per epoch"] == 10 and rows[1]["steps"] == 20 and rows[1]["final training loss"] == 0.2
    assert rows[0]["seconds per epoch"] == 0.5


def _per_batch():
    return {4: {"steps": [100, None, 120], "acc": [0.9, 0.8]}, 16: {"steps": [30, 40, 35], "acc": [0.95, 0.9, 0.85]}}


def test_tuned_rate_table_counts_a_failed_run_as_infinite_and_adds_columns():
    table = tuned_rate_table(_per_batch(), {4: 1.0, 16: 2.0}, 160, 0.3, {"extra": {4: "a", 16: "b"}})
    assert table.columns[:4] == ["batch", "tuned rate", "noise temperature ε·N/B", "extra"]
    small, big = table.records()
    assert small["noise temperature ε·N/B"] == 40.0 and big["extra"] == "b"
    assert small["steps to the target, fresh seeds: median (min–max)"] == "120 (100–inf)"
    assert small["fresh seeds reaching the target"] == "2/3"
    assert big["examples (epochs) to loss 0.3"] == "560 (3.50)"
    assert big["test accuracy at the target (mean ± sd)"] == "0.900 ± 0.050"


def test_median_steps_table_marks_grids_that_diverged_everywhere():
    runs = {}
    for r, outcomes in [(0.5, [(50, None), (60, None)]), (1.0, [(None, 30), (40, None)]), (2.0, [(None, None), (None, None)])]:
        for s, (steps, stopped) in enumerate(outcomes):
            runs[(8, r, s)] = TargetRun(8, r, s, steps, None, np.zeros(1), 0.0, stopped_at=stopped)
    table = median_steps_table(runs, [8], [0.5, 1.0, 2.0], [0, 1])
    assert table.columns == ["batch", "rate 0.5", "rate 1", "rate 2"]
    assert table.rows == [[8, "55", "inf", "–"]]


def test_steps_to_target_figure_draws_each_predicted_noise_scale():
    show_steps_to_target(_per_batch(), {"s_min": 20.0, "b_crit": 10.0}, "m", 0.3, finding="knee", ylim=(1, 1e3),
                         noise_scales={"B_simple": 50.0, "B_noise": 500.0})
    ax = plt.gcf().axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert any("B_simple = 50" in l for l in labels) and any("B_noise = 500" in l for l in labels)
    grid, predicted = ax.lines[-1].get_data()
    assert np.allclose(predicted, 20.0 * (1 + 500.0 / grid))
    assert ax.get_xscale() == "log" and ax.get_ylim() == (1, 1e3)
    plt.close("all")
