"""Unit tests for helpers.running_stats (small data, no notebook execution)."""
import numpy as np
import pytest

from helpers import models
from helpers import running_stats as rs


@pytest.fixture(scope="module")
def tiny():
    """A small BN network (momentum 0.9) after a few training steps, and 256 digits."""
    from helpers.workbook.environment import quiet_tensorflow, seed_everything
    quiet_tensorflow()
    seed_everything(0)
    from helpers.data import load_digits
    from helpers.models import compile_classifier
    d = load_digits()
    x, y = d.x_train[:256], d.y_train[:256]
    model = compile_classifier(models.regularized_cnn(momentum=0.9, filters=(4, 8), dense=8))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, x, y


def test_simulation_shapes_and_last_steps():
    sim = rs.simulate_running_variance(momentum=0.9, batch_size=8, last_batch=3, full_batches=5, epochs=4)
    assert sim.error.shape == (4 * 6,)
    assert sim.steps_per_epoch == 6
    np.testing.assert_array_equal(sim.last_steps, [5, 11, 17, 23])
    dropped = rs.simulate_running_variance(momentum=0.9, batch_size=8, last_batch=0, full_batches=5, epochs=4)
    assert dropped.error.shape == (20,) and dropped.last_steps.size == 0


def test_simulation_forgets_the_starting_value_like_momentum_power():
    # with very many values per batch the batch variance is almost exact, so only the start remains
    sim = rs.simulate_running_variance(momentum=0.99, batch_size=64, last_batch=0, full_batches=50, epochs=1,
                                       true_variance=0.05, samples_per_channel=10_000, channels=8)
    expected = 0.99 ** 50 * (1.0 - 0.05) / 0.05
    assert sim.error[-1] == pytest.approx(expected, rel=0.02)


def test_simulated_batch_of_one_pulls_the_variance_towards_zero():
    # start at the truth: one batch of a single value has variance 0, so error = 1 - momentum
    sim = rs.simulate_running_variance(momentum=0.9, batch_size=1, last_batch=0, full_batches=1, epochs=1,
                                       initial_variance=0.05, true_variance=0.05)
    assert sim.error[0] == pytest.approx(0.1, abs=1e-12)


def test_simulation_is_seeded():
    a = rs.simulate_running_variance(momentum=0.95, batch_size=4, last_batch=1, seed=3)
    b = rs.simulate_running_variance(momentum=0.95, batch_size=4, last_batch=1, seed=3)
    c = rs.simulate_running_variance(momentum=0.95, batch_size=4, last_batch=1, seed=4)
    np.testing.assert_array_equal(a.error, b.error)
    assert not np.array_equal(a.error, c.error)


def test_training_mode_accuracy_uses_batch_statistics_and_leaves_the_model_alone(tiny):
    """helpers.training.accuracy is the one training-mode scorer: it must equal a hand-made
    loop over the same batches (each normalized with its own statistics) and restore the state."""
    from helpers.batchnorm import moving_statistics
    from helpers.training import accuracy
    model, x, y = tiny
    before = moving_statistics(model)
    order = np.random.default_rng(0).permutation(len(x))
    batches = [order[i:i + 32] for i in range(0, len(x), 32)]
    acc = accuracy(model, x, y, training=True, batches=batches)
    acc_compiled = accuracy(model, x, y, training=True, batches=batches, compiled=True)
    by_hand = []
    for b in batches:
        by_hand.append(np.argmax(np.asarray(model(x[b], training=True)), -1) == y[b])
    rs.assign_moving_statistics(model, before)      # the hand loop moved them (Keras 3)
    assert acc == pytest.approx(float(np.mean(np.concatenate(by_hand))), abs=1e-12)
    assert acc_compiled == pytest.approx(acc, abs=1.0 / len(x) + 1e-12)
    # training mode on batches of 32 differs from inference mode on this half-trained model
    assert accuracy(model, x, y, training=True, batch_size=1) != accuracy(model, x, y)
    for (m0, v0), (m1, v1) in zip(before, moving_statistics(model)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)


def test_precise_statistics_match_precise_bn_without_changing_the_model(tiny):
    from helpers.batchnorm import moving_statistics, precise_bn, precise_statistics, preserved_bn_state
    model, x, _ = tiny
    before = moving_statistics(model)
    exact = precise_statistics(model, x)
    exact_compiled = precise_statistics(model, x, compiled=True)
    for (_, v0), (_, v1) in zip(before, moving_statistics(model)):
        np.testing.assert_array_equal(v0, v1)
    with preserved_bn_state(model):
        assigned = precise_bn(model, x)
        # an independent reading: Keras's own inference-mode BN now standardizes each layer's training input
        import keras
        outs = keras.Model(model.inputs[0], [l.output for l in rs.bn_layers(model)])(x, training=False)
        for layer, out in zip(rs.bn_layers(model), outs):
            out = np.asarray(out, np.float64).reshape(-1, out.shape[-1])
            np.testing.assert_allclose(out.mean(0), np.asarray(layer.beta), atol=2e-3)
    for (me, ve), (mc, vc), (mp, vp) in zip(exact, exact_compiled, assigned):
        np.testing.assert_allclose(me, mp, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ve, vp, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(vc, vp, rtol=1e-5, atol=1e-7)


def test_statistics_errors_zero_at_the_truth_and_relative_otherwise():
    truth = [(np.array([0.0, 1.0]), np.array([1.0, 4.0]))]
    assert rs.statistics_errors(truth, truth)["var_rel_error"] == 0.0
    off = [(np.array([1.0, 1.0]), np.array([2.0, 4.0]))]
    err = rs.statistics_errors(off, truth)
    assert err["var_rel_error"] == pytest.approx(0.5)       # (1 + 0) / 2
    assert err["mean_error_in_sd"] == pytest.approx(0.5)    # (1/1 + 0/2) / 2


def test_single_update_errors_table_and_model_unchanged(tiny):
    model, x, _ = tiny
    before = rs.moving_statistics(model)
    momenta = [l.momentum for l in rs.bn_layers(model)]
    table = rs.single_update_errors(model, x, batch_sizes=[1, 32], momentums=[0.9, 0.99], draws=3, seed=0)
    assert table.columns[:3] == ["momentum", "batch size", "moving variance rel. error"]
    err = {(r[0], r[1]): r[2] for r in table.rows}
    assert err[(0.9, 1)] > err[(0.9, 32)] > 0
    assert 3 < err[(0.9, 1)] / err[(0.99, 1)] < 30  # the error is (1 - momentum) x (batch - exact)
    # one image has one value per dense channel: variance 0, so the dense BN's variance is scaled by momentum
    dense = table.columns.index("norm_dense")
    for row in table.rows:
        if row[1] == 1:
            assert row[dense] == pytest.approx(1 - row[0], abs=1e-5)
        else:
            assert row[dense] < 1 - row[0]
    assert [l.momentum for l in rs.bn_layers(model)] == momenta
    for (_, v0), (_, v1) in zip(before, rs.moving_statistics(model)):
        np.testing.assert_array_equal(v0, v1)


def test_dropout_variance_shift_only_before_bn():
    from helpers.workbook.environment import seed_everything
    from helpers.data import load_digits
    seed_everything(1)
    x = load_digits().x_train[:256]
    before = rs.dropout_variance_shift(models.regularized_cnn(dropout="before", rate=0.5, filters=(4, 8), dense=8), x)
    after = rs.dropout_variance_shift(models.regularized_cnn(dropout="after", rate=0.5, filters=(4, 8), dense=8), x)
    assert before["ratio"] > 1.3
    assert after["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert before["train_var"].shape == (8,)


def test_regularized_cnn_options():
    with pytest.raises(ValueError, match="dropout"):
        models.regularized_cnn(dropout="middle")
    model = models.regularized_cnn(l2=1e-3, filters=(4, 8), dense=8)
    assert model.output_shape == (None, 10)
    assert len(model.losses) == 3  # one L2 term per kernel feeding a BN layer


def test_regularized_cnn_norm_variants():
    import keras
    with pytest.raises(ValueError, match="norm"):
        models.regularized_cnn(norm="layer")
    with pytest.raises(ValueError, match="groups"):
        models.regularized_cnn(norm="group", groups=3, filters=(4, 8), dense=8)
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype("float32")
    kinds = {}
    for norm in ("batch", "group", "none"):
        model = models.regularized_cnn(norm=norm, filters=(4, 8), dense=8)
        kinds[norm] = {type(l).__name__ for l in model.layers}
        if norm != "batch":   # no batch statistics: training and inference mode give the same outputs
            np.testing.assert_array_equal(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))
        biases = [model.get_layer(n).use_bias for n in ("conv0", "conv1", "dense")]
        assert biases == [norm == "none"] * 3     # without a norm layer the layers need their own bias
    assert "BatchNormalization" in kinds["batch"] and "GroupNormalization" not in kinds["batch"]
    assert "GroupNormalization" in kinds["group"] and "BatchNormalization" not in kinds["group"]
    assert not kinds["none"] & {"BatchNormalization", "GroupNormalization"}
    assert isinstance(models.regularized_cnn(norm="group", filters=(4, 8), dense=8).get_layer("norm_dense"),
                      keras.layers.GroupNormalization)


def test_check_sizes_refuses_what_the_lesson_cannot_use():
    from helpers.workbook.params import ParameterError
    rs.check_sizes(epochs=3, batch_size=32, train_size=1409, long_epochs=30)
    for bad, word in [(dict(train_size=1408), "multiple"), (dict(train_size=20), "larger"),
                      (dict(epochs=50, batch_size=2, train_size=1401), "epochs"),
                      (dict(long_epochs=60, batch_size=8, train_size=1401), "long_epochs")]:
        with pytest.raises(ParameterError, match=word):
            rs.check_sizes(**{**dict(epochs=3, batch_size=32, train_size=1409, long_epochs=30), **bad})


def test_plot_lines_draws_one_line_per_series():
    import matplotlib
    matplotlib.use("Agg")
    from helpers.workbook.plotting import figure
    _, ax = figure()
    out = rs.plot_lines({"a": ([1, 2], [3, 4]), "b": ([1, 2], [1, 1], "k:")}, finding=None, ax=ax,
                        xlabel="x", ylabel="y", logy=True, vline=1.5)
    assert out is ax and [l.get_label() for l in ax.get_lines()][:2] == ["a", "b"] and ax.get_yscale() == "log"
    assert rs.plot_lines({"a": ([1, 2], [3, 4])}, finding="shown", xlabel="x", ylabel="y") is None


def test_kernel_norm_is_the_norm_of_the_bn_kernels():
    model = models.regularized_cnn(filters=(4, 8), dense=8)
    parts = [np.asarray(model.get_layer(n).kernel).ravel() for n in ("conv0", "conv1", "dense")]
    assert rs.kernel_norm(model) == pytest.approx(float(np.linalg.norm(np.concatenate(parts))), rel=1e-6)


def test_tracker_records_every_n_steps_and_at_the_end(tiny):
    from helpers.models import compile_classifier
    _, x, y = tiny
    model = compile_classifier(models.regularized_cnn(momentum=0.9, filters=(4, 8), dense=8))
    tracker = rs.statistics_tracker(x, every=3)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[tracker])   # 8 steps
    steps = list(tracker.column("step"))
    assert steps == [0, 3, 6, 8]
    errors = tracker.column("var_rel_error")
    assert np.all(np.isfinite(errors)) and errors[-1] < errors[0]
    assert np.isnan(tracker.records[0]["relative_change"]) and tracker.records[-1]["relative_change"] > 0
    cheap = rs.statistics_tracker(x, every=4, statistics=False)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cheap])
    assert np.isnan(cheap.records[-1]["var_rel_error"]) and cheap.records[-1]["kernel_norm"] > 0


def test_tracker_measures_the_same_steps_with_several_steps_per_call(tiny):
    """With steps_per_execution = 2 Keras calls the tracker once per 2 steps; it reads the step from
    the optimizer, so it measures at the same steps, and the training (same batches) is the same."""
    import keras
    from helpers.models import compile_classifier
    _, x, y = tiny
    runs = {}
    for k in (1, 2):
        keras.utils.set_random_seed(0)
        model = compile_classifier(models.regularized_cnn(momentum=0.9, filters=(4, 8), dense=8), steps_per_execution=k)
        tracker = rs.statistics_tracker(x, every=4)
        model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0, callbacks=[tracker])   # 8 steps
        runs[k] = tracker
    assert list(runs[2].column("step")) == list(runs[1].column("step")) == [0, 4, 8]
    np.testing.assert_allclose(runs[2].column("var_rel_error"), runs[1].column("var_rel_error"), rtol=1e-5)


def test_simulation_view_draws_and_returns_final_errors():
    view = rs.simulation_view(batch_size=8, full_batches=5, seed=0)
    kept, dropped = view(momentum=0.9, last_batch=1, epochs=2)
    kept2, _ = view(momentum=0.99, last_batch=4, epochs=2)
    assert kept > 0 and dropped > 0 and kept2 != kept


def test_last_batch_error_formula_is_the_mean_of_its_folded_normal():
    rng = np.random.default_rng(0)
    for m, b in ((0.9, 32), (0.99, 8), (0.5, 2)):
        s = np.sqrt((1 - m) / (1 + m) * 2 * (b - 1) / b**2)
        draws = np.abs(m * (1 - 1 / b + rng.normal(0, s, 400_000)) - 1)
        assert rs.last_batch_error_formula(m, b) == pytest.approx(draws.mean(), rel=5e-3)
    # a spread far below the centre: the error is the centre, 1 − m(1 − 1/b)
    assert rs.last_batch_error_formula(0.9, 256) == pytest.approx(1 - 0.9 * (1 - 1 / 256), rel=1e-6)


def test_predicted_dropout_ratio_matches_the_measured_shift():
    from helpers.workbook.environment import seed_everything
    from helpers.data import load_digits
    seed_everything(3)
    model = models.regularized_cnn(dropout="before", rate=0.5, filters=(4, 8), dense=8)
    x = load_digits().x_train[:1000]
    predicted = rs.predicted_dropout_ratio(model, x, 0.5)
    measured = rs.dropout_variance_shift(model, x)["ratio"]
    assert predicted > 1.3 and measured == pytest.approx(predicted, rel=0.1)
    assert rs.predicted_dropout_ratio(model, x, 0.2) < predicted     # fewer masks, less added variance


def test_lesson_tables_have_readable_headers_and_leave_the_rows_alone():
    rows = [[0.9, 135, 132, 0.06, 0.03, 0.5, 1.1, 0.97, 0.96], [0.99, 135, 132, 8.8, 9.1, 1.03, 1.0306, 0.10, 0.10]]
    kept = [list(r) for r in rows]
    table = rs.drop_remainder_table(rows, leftover_dominates=True)
    assert rows == kept and "_" not in "".join(table.columns)
    assert table.rows[0][6] == "— (leftover gone)" and table.rows[1][6] == 1.0306
    assert "3 updates fewer" in table.title and "1.0306×" in table.title
    warm = rs.drop_remainder_table(rows, leftover_dominates=False)
    assert [r[6] for r in warm.rows] == ["— (leftover gone)"] * 2 and "gone at both" in warm.title
    w = rs.warmup_table([[0.99, 135, 0.98, 0.1, 0.97, 8.8, 3.0, 0.26]], title="t")
    assert len(w.columns) == 8 and w.title == "t" and "_" not in "".join(w.columns)


def test_plot_gap_parts_draws_one_panel_per_run():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = np.array([[3, 0.9, 0.8, 0.05, 0.85, 0.1], [6, 0.99, 0.0, 0.02, 0.02, 0.97]])
    rs.plot_gap_parts({"a": rows, "b": rows}, finding="two panels")
    fig = plt.gcf()
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"] and all(len(ax.get_lines()) == 3 for ax in fig.axes)
    plt.close(fig)
