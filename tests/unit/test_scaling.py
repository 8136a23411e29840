"""helpers.scaling's figures and the summed-vs-averaged optimizer run of lesson 05 (sections 8-9)."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from helpers import scaling  # noqa: E402


def test_plot_steps_against_batch_draws_measured_perfect_and_both_fits():
    reached = [{"batch": 8, "steps": 100.0}, {"batch": 64, "steps": 20.0}, {"batch": 512, "steps": 12.0}]
    fig, ax = scaling.plot_steps_against_batch(reached, {"s_min": 10.0, "b_noise": 30.0}, {"b_simple": 250.0}, 0.94)
    assert len(ax.lines) == 4
    assert list(ax.lines[1].get_ydata()) == pytest.approx([100.0, 12.5, 100 * 8 / 512])
    assert list(ax.lines[2].get_ydata()) == pytest.approx(scaling.predicted_steps([8, 64, 512], 10.0, 30.0))


def test_throughput_model_figure_tabulates_every_combination():
    calls = []

    def speedup(compute_s, n_bytes, k, bandwidth, *, scaling, overlap):
        calls.append((scaling, overlap, bandwidth))
        return np.asarray(k, float) * (1.0 if scaling == "weak" else 0.5)

    table = scaling.throughput_model_figure(speedup)
    assert len(table) == 8 and len(calls) == 8
    assert table.columns[3:] == ["speed-up at k=2", "k=8", "k=64"]
    assert table.rows[0][3:] == [2.0, 8.0, 64.0] and table.rows[2][3:] == [1.0, 4.0, 32.0]


def test_throughput_model_figure_with_the_lessons_model():
    from helpers.distributed import throughput_speedup
    table = scaling.throughput_model_figure(throughput_speedup)
    weak_fast = table.rows[0]                     # NVLink-class, weak, no overlap: close to k
    assert 1.5 < weak_fast[3] <= 2.0 and weak_fast[5] <= 64


def test_weights_after_steps_sgd_is_the_numpy_step_and_scale_is_the_rate():
    import keras
    rng = np.random.default_rng(0)
    xa = scaling.augment(rng.normal(size=(100, 4)))
    y = rng.integers(0, 10, size=100)
    one = scaling.weights_after_steps(keras.optimizers.SGD(0.1), 1.0, xa, y, seed=3, steps=1, batch=64)
    idx = np.random.default_rng(3).permutation(100)[:64]
    assert one == pytest.approx(-0.1 * scaling.mean_gradient(np.zeros((5, 10)), xa[idx], y[idx]), abs=1e-6)
    summed = scaling.weights_after_steps(keras.optimizers.SGD(0.1), 4.0, xa, y, seed=3, steps=5, batch=32)
    scaled = scaling.weights_after_steps(keras.optimizers.SGD(0.4), 1.0, xa, y, seed=3, steps=5, batch=32)
    assert summed == pytest.approx(scaled, abs=1e-5)
    adam = [scaling.weights_after_steps(keras.optimizers.Adam(1e-2, epsilon=1e-12), s, xa, y, seed=3, steps=5) for s in (1.0, 4.0)]
    assert np.abs(adam[1] - adam[0]).max() <= 1e-4 * np.abs(adam[0]).max()
