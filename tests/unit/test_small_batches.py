"""Unit tests for helpers.small_batches (small data, no notebook execution)."""
import numpy as np
import pytest

from helpers import small_batches as sb
from helpers.data import load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_class_dependent_pixel(digits):
    values, (row, col), share = sb.class_dependent_pixel(digits.x_train, digits.y_train)
    assert values.shape == (len(digits.x_train),)
    np.testing.assert_array_equal(values, digits.x_train[:, row, col, 0])
    assert 0.3 < share < 1.0


def test_between_class_share_extremes():
    labels = np.array([0, 0, 1, 1])
    cols = np.array([[0.0, 1.0, 5.0], [0.0, 2.0, 5.0], [1.0, 1.0, 5.0], [1.0, 2.0, 5.0]])
    np.testing.assert_allclose(sb.between_class_share(cols, labels), [1.0, 0.0, 0.0])


def test_iid_trials_follow_the_bias_formula():
    rng = np.random.default_rng(0)
    values = rng.normal(size=500)
    labels = np.repeat(np.arange(5), 100)
    means, variances = sb.estimator_trials(values, labels, 2, 40_000, rng, "iid")
    assert means.shape == variances.shape == (40_000,)
    ratio = variances.mean() / values.var()
    assert abs(ratio - 0.5) < 5 * variances.std() / values.var() / np.sqrt(40_000)


def test_grouped_trials_draw_each_batch_from_one_class():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), [5, 10, 20])
    values = labels * 100.0 + rng.random(len(labels))  # class = hundreds digit
    means, variances = sb.estimator_trials(values, labels, 4, 1000, rng, "grouped")
    assert np.all(variances < 1.0)  # never mixes classes
    assert set(np.floor(means / 100).astype(int)) == {0, 1, 2}
    with pytest.raises(ValueError):
        sb.estimator_trials(values, labels, 4, 10, rng, "sorted")


def test_estimator_table_columns_and_correction():
    rng = np.random.default_rng(2)
    values = rng.normal(size=300)
    table = sb.estimator_table(values, np.zeros(300, int), [2, 8], 20_000, rng)
    assert table.column("batch size m") == [2, 8]
    for r, c, m in zip(table.column("E[biased var]/var"), table.column("E[corrected var]/var"), [2, 8]):
        assert c == pytest.approx(r * m / (m - 1))
        assert abs(c - 1) < 0.05


def test_batch_of_two_normalizes_to_plus_minus_one():
    y = sb.plus_minus_one(np.random.default_rng(3), channels=4)
    assert y.shape == (2, 4)
    np.testing.assert_allclose(np.abs(y), 1.0, atol=1e-12)
    np.testing.assert_allclose(y[0], -y[1], atol=1e-12)


def test_numpy_reference_matches_keras():
    table = sb.numpy_vs_keras([(6, 3), (2, 4, 4, 2)], np.random.default_rng(4))
    assert len(table) == 4
    assert max(table.column("max |NumPy - Keras|")) < 1e-5


def test_keras_stores_biased_variance():
    out = sb.keras_stored_variance(3, 4, np.random.default_rng(5))
    np.testing.assert_allclose(out["stored"], out["biased"], rtol=1e-5)
    np.testing.assert_allclose(out["unbiased"] / out["biased"], 1.5, rtol=1e-9)


def test_sample_counts_and_scaling_restore(digits):
    model = sb.build_model("batch", seed=0)
    assert sb.bn_sample_counts(model, 2) == [2 * 8 * 8, 2 * 4 * 4, 2]
    layer = sb.bn_layers(model)[-1]
    before = np.asarray(layer.moving_variance).copy()
    with sb.scaled_moving_variance(model, [1.0, 1.0, 3.0]):
        np.testing.assert_allclose(np.asarray(layer.moving_variance), 3 * before)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), before)


def test_training_mode_scoring_leaves_moving_statistics_alone(digits):
    model = sb.build_model("batch", seed=0)
    before = [np.asarray(v).copy() for l in sb.bn_layers(model) for v in l.non_trainable_variables]
    acc = sb.accuracy_in_mode(model, digits.x_test[:40], digits.y_test[:40], training=True, batch_size=4)
    after = [np.asarray(v) for l in sb.bn_layers(model) for v in l.non_trainable_variables]
    assert 0.0 <= acc <= 1.0
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_training_dataset_full_batches(digits):
    ds, steps = sb.training_dataset(digits.x_train, digits.y_train, 32, "grouped", epochs=2, seed=0)
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert len(sizes) == 2 * steps and set(sizes) == {32}
    for _, y in ds.take(5):
        assert len(np.unique(y.numpy())) == 1


def test_sweep_run_resets_to_the_same_start(digits):
    n = 256
    sweep = sb.Sweep(digits.x_train[:n], digits.y_train[:n], digits.x_test[:64], digits.y_test[:64],
                     epochs=1, learning_rate=1e-3, seed=0)
    first = sweep.run("group", "iid", 32)
    sweep.results.clear()
    again = sweep.run("group", "iid", 32)
    assert first.acc == again.acc and first.steps == n // 32
    assert abs(first.acc_train_mode - first.acc) < 0.02  # GroupNorm: no batch dependence
    table = sb.sweep_table([first], highlight=("iid", 32))
    assert table.highlight == {0}


def test_svg_histogram_is_valid_svg_with_labels():
    import xml.etree.ElementTree as ET
    svg = sb.svg_histogram(np.array([0.1, 0.2, 0.2, 3.9, 9.0]), bins=4, value_range=(0.0, 4.0), title="t <1>",
                           xlabel="x (units)", ylabel="count", markers=[(1.0, "black", "mean")])
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "t <1>" in texts and "x (units)" in texts and "count" in texts and "mean" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}rect"))) == 2  # bins [0,1) and [3,4] (9.0 clipped)


def test_estimator_panel_returns_highlighted_table(digits):
    ink, _, _ = sb.class_dependent_pixel(digits.x_train, digits.y_train)
    res = sb.RunResult("batch", "grouped", 2, 1, 1e-3, 10, 1.0, 0.5, 0.4)
    table = sb.estimator_panel(ink, digits.y_train, [res], 2, "grouped", trials=500)
    assert table.highlight == {0}
    table = sb.estimator_panel(ink, digits.y_train, [res], 4, "iid", trials=500)
    assert table.highlight == set() and "not in the sweep" in table.title
