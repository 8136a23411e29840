"""helpers.gradient_noise: lesson 01's noise plot and the divergence test of a rate grid."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from helpers.gradient_noise import (GradientNoise, StepsToTarget, grid_reaches_divergence, plot_gradient_noise)


def test_a_grid_reaches_divergence_only_when_some_run_diverged():
    runs = {(4, 1.0, 0): StepsToTarget(4, 1.0, 0, 50, 0.9), (4, 2.0, 0): StepsToTarget(4, 2.0, 0, None, None, stopped_at=80)}
    assert not grid_reaches_divergence(runs, 4, [1.0, 2.0], [0])          # cut short is not diverged
    runs[(4, 2.0, 0)] = StepsToTarget(4, 2.0, 0, None, None)
    assert grid_reaches_divergence(runs, 4, [1.0, 2.0], [0])


def test_noise_plot_shows_theory_and_measurements():
    noise = GradientNoise(np.array([1, 4, 16]), np.array([1.0, 0.26, 0.06]), np.array([0.01, 0.01, 0.01]), 1.0, 0.1, 100)
    plot_gradient_noise(noise, 50, finding="falls like 1/B")
    ax = plt.gcf().axes[0]
    b_grid, theory = ax.lines[0].get_data()
    assert b_grid[0] == 1 and b_grid[-1] == 16 and np.allclose(theory, noise.theory(b_grid))
    assert ax.get_xscale() == "log" and "50 batches per size" in ax.get_legend_handles_labels()[1][1]
    plt.close("all")
