"""Unit tests for helpers.small_batches (small data, no notebook execution)."""
import numpy as np
import pytest

from helpers import models
from helpers import small_batches as sb
from helpers.results import small_batch_runs
from helpers import small_batch_plots
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


def test_dense_bn_output_is_plus_minus_one_at_batch_two_conv_bn_is_not(digits):
    model = models.sweep_cnn("batch", seed=0)
    before = [np.asarray(v).copy() for l in sb.bn_layers(model) for v in l.non_trainable_variables]
    table = sb.bn_output_signs(model, digits.x_test[:2])
    assert table.column("values per channel") == [2 * 8 * 8, 2 * 4 * 4, 2]
    fractions = table.column("fraction of |output| within 0.01 of 1")
    # untrained weights: some dense features differ by less than sqrt(epsilon) between the two images
    assert fractions[-1] >= 0.5 and max(fractions[:-1]) <= 0.2
    medians = table.column("median |output|")
    assert abs(medians[-1] - 1) <= 0.01 and max(medians[:-1]) < 0.9
    after = [np.asarray(v) for l in sb.bn_layers(model) for v in l.non_trainable_variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_numpy_reference_matches_keras():
    table = sb.numpy_vs_keras([(6, 3), (2, 4, 4, 2)], np.random.default_rng(4))
    assert len(table) == 4
    assert max(table.column("max |NumPy - Keras|")) < 1e-5


def test_numpy_vs_keras_catches_a_wrong_forward_pass():
    def unbiased(x, gamma, beta, *, training, moving_mean=None, moving_var=None, eps=1e-3):
        x = np.asarray(x, np.float64)
        if training:
            mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)  # wrong: Keras divides by m
        else:
            mean, var = moving_mean, moving_var
        return gamma * (x - mean) / np.sqrt(var + eps) + beta
    table = sb.numpy_vs_keras([(4, 3)], np.random.default_rng(4), forward=unbiased)
    diffs = dict(zip(table.column("mode"), table.column("max |NumPy - Keras|")))
    assert diffs["training"] > 1e-2 and diffs["inference"] < 1e-5


def test_keras_stores_biased_variance():
    out = sb.keras_stored_variance(3, 4, np.random.default_rng(5))
    np.testing.assert_allclose(out["stored"], out["biased"], rtol=1e-5)
    np.testing.assert_allclose(out["unbiased"] / out["biased"], 1.5, rtol=1e-9)


def test_sample_counts_and_scaling_restore(digits):
    model = models.sweep_cnn("batch", seed=0)
    assert sb.bn_sample_counts(model, 2) == [2 * 8 * 8, 2 * 4 * 4, 2]
    layer = sb.bn_layers(model)[-1]
    before = np.asarray(layer.moving_variance).copy()
    with sb.scaled_moving_variance(model, [1.0, 1.0, 3.0]):
        np.testing.assert_allclose(np.asarray(layer.moving_variance), 3 * before)
    np.testing.assert_allclose(np.asarray(layer.moving_variance), before)


def test_accuracy_on_batches_scores_the_batches_it_builds(digits):
    import keras
    model = models.sweep_cnn("batch", seed=0)
    x, y = digits.x_test[:41], digits.y_test[:41]
    before = [np.asarray(v).copy() for l in sb.bn_layers(model) for v in l.non_trainable_variables]
    for order in ("iid", "grouped"):
        acc = sb.accuracy_on_batches(model, x, y, 4, order, seed=3)
        # the same batches, scored by hand: one training-mode call per batch, on a copy of the model
        batches = sb.epoch_batches(y, 4, order, np.random.default_rng(3), drop_remainder=True)
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        hits = [np.argmax(np.asarray(clone(x[b], training=True)), -1) == y[b] for b in batches]
        assert acc == pytest.approx(np.mean(np.concatenate(hits)), abs=1e-9)
        if order == "grouped":
            assert all(len(set(y[b])) == 1 for b in batches)
    after = [np.asarray(v) for l in sb.bn_layers(model) for v in l.non_trainable_variables]
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
    assert first.acc_precise is None  # no BN layer to re-estimate
    table = sb.sweep_table([first], highlight=("iid", 32))
    assert table.highlight == {0}


def test_sweep_run_with_other_epochs_reuses_the_model_and_is_not_stored(digits):
    n = 256
    sweep = sb.Sweep(digits.x_train[:n], digits.y_train[:n], digits.x_test[:64], digits.y_test[:64],
                     epochs=1, learning_rate=1e-3, seed=0, train_mode=False)
    model = sweep.model("batch")
    longer = sweep.run("batch", "iid", 32, epochs=3)
    assert sweep.model("batch") is model and not sweep.results     # same compiled model, nothing stored
    assert longer.epochs == 3 and int(model.optimizer.iterations.numpy()) == 3 * (n // 32)
    fresh = sb.Sweep(digits.x_train[:n], digits.y_train[:n], digits.x_test[:64], digits.y_test[:64],
                     epochs=3, learning_rate=1e-3, seed=0, train_mode=False).run("batch", "iid", 32)
    assert (longer.acc, longer.acc_precise) == (fresh.acc, fresh.acc_precise)   # the same run as a sweep of 3 epochs


def test_svg_histogram_is_valid_svg_with_labels():
    import xml.etree.ElementTree as ET
    svg = small_batch_plots.svg_histogram(np.array([0.1, 0.2, 0.2, 3.9, 9.0]), bins=4, value_range=(0.0, 4.0), title="t <1>",
                                          xlabel="x (units)", ylabel="count", markers=[(1.0, "black", "mean")])
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "t <1>" in texts and "x (units)" in texts and "count" in texts and "mean" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}rect"))) == 2  # bins [0,1) and [3,4] (9.0 clipped)


def test_estimator_panel_returns_highlighted_table(digits):
    ink, _, _ = sb.class_dependent_pixel(digits.x_train, digits.y_train)
    res = sb.RunResult("batch", "grouped", 2, 1, 1e-3, 10, 1.0, 0.5, 0.4)
    table = small_batch_plots.estimator_panel(ink, digits.y_train, [res], 2, "grouped", trials=500)
    assert table.highlight == {0}
    table = small_batch_plots.estimator_panel(ink, digits.y_train, [res], 4, "iid", trials=500)
    assert table.highlight == set() and "not in the sweep" in table.title


def test_sweep_uses_the_given_builder_and_callbacks(digits):
    import keras
    built, seen = [], []

    def build(norm, seed):
        built.append((norm, seed))
        return models.sweep_cnn("batch", seed)

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    sweep = sb.Sweep(digits.x_train[:128], digits.y_train[:128], digits.x_test[:32], digits.y_test[:32],
                     epochs=2, learning_rate=1e-3, seed=5, build=build, train_mode=False,
                     callbacks=lambda norm, total: [Count()] if total == 2 * (128 // 16) else [])
    res = sweep.run("mine", "iid", 16)
    assert built == [("mine", 5)] and seen == [0]   # the run's epochs are one fit epoch (see Sweep)
    assert res.acc_train_mode is None and res.acc_precise is not None  # BN layers: precise BN scored
    assert res.steps == 128 // 16
    # exactly epochs x steps training steps, although 100 steps per call do not divide an 8-step epoch
    # (two fit epochs of 8 steps at steps_per_execution=100 would have trained 32)
    assert int(sweep.model("mine").optimizer.iterations.numpy()) == 2 * (128 // 16)


def test_committed_mnist1d_table_is_complete_with_provenance():
    import json
    from helpers.workbook.committed import DATA_DIR, provenance_path, read_csv_rows
    rows = read_csv_rows(DATA_DIR / small_batch_runs.MNIST1D_TABLE, keep_text=("norm",))
    epochs, lr = small_batch_runs.MNIST1D_DEFAULTS["mnist1d_epochs"], small_batch_runs.MNIST1D_DEFAULTS["learning_rate"]
    for seed in small_batch_runs.MNIST1D_SEEDS:
        got = small_batch_runs.committed_mnist1d_rows(seed, epochs, lr)
        assert sorted(got) == sorted((n, b) for n, b, _ in small_batch_runs.mnist1d_settings(epochs))
        steps = {k: r["steps"] * r["epochs"] for k, r in got.items()}
        assert steps[("batch", 32)] == steps[("batch", 2)] == 4000 // 2 * epochs   # equal steps, 4,000 signals
        assert all(0.0 <= r["acc"] <= 1.0 for r in got.values())
        assert got[("group", 2)]["acc_precise"] == "" and got[("batch", 2)]["acc_precise"] != ""
    assert len(rows) == len(small_batch_runs.MNIST1D_SEEDS) * 4
    info = json.loads(provenance_path(DATA_DIR / small_batch_runs.MNIST1D_TABLE).read_text())
    assert info["command"].startswith("python -m helpers.results.small_batch_runs") and info["rows"] == len(rows)
    assert {"tensorflow", "keras", "started_utc", "machine"} <= set(info)


def test_committed_mnist1d_rows_only_for_tabulated_settings():
    assert small_batch_runs.committed_mnist1d_rows(13, 2, 0.001) == {}
    assert small_batch_runs.committed_mnist1d_rows(0, 5, 0.001) == {}
    assert small_batch_runs.committed_mnist1d_rows(0, 2, 0.01) == {}


def test_mnist1d_row_round_trip_and_row_spreads():
    res = sb.RunResult("batch", "iid", 2, 2, 0.001, 2000, 3.2, 0.31, None, 0.324)
    row = small_batch_runs.mnist1d_row(res, seed=0, mnist1d_epochs=2)
    assert set(row) == set(small_batch_runs.MNIST1D_COLUMNS)
    back = small_batch_runs.result_from_row(row)
    assert (back.norm, back.batch_size, back.steps, back.acc, back.acc_precise) == ("batch", 2, 2000, 0.31, 0.324)
    seeds = {0: row, 1: dict(row, seed=1, acc=0.33, acc_precise=0.34), 2: dict(row, seed=2, acc=0.32, acc_precise=0.33)}
    spreads = small_batch_runs.sweep_row_spreads(res, seeds, 0, 1000)
    assert [s.quantity for s in spreads] == ["test accuracy", "after precise BN"]
    assert all(s.within for s in spreads) and spreads[0].same_seed == 0.31
    # a run far outside the seeds' range (0.31–0.33, margin 3 × SE ≈ 0.044) is caught
    far = sb.RunResult("batch", "iid", 2, 2, 0.001, 2000, 3.2, 0.20, None, 0.324)
    assert not small_batch_runs.sweep_row_spreads(far, seeds, 5, 1000)[0].within
    with pytest.raises(ValueError, match="not the same run"):   # other steps: not the same setting
        small_batch_runs.sweep_row_spreads(sb.RunResult("batch", "iid", 2, 1, 0.001, 1000, 3.2, 0.31, None, 0.324), seeds, 0, 1000)


def test_page_builder_is_the_notebooks():
    build = small_batch_runs.page_builder()
    model = build("dense_ln", 0, input_shape=(40, 1))
    assert [l.name for l in model.layers if l.name.startswith("norm")] == ["norm0", "norm1", "norm_dense"]
    assert type(model.get_layer("norm_dense")).__name__ == "LayerNormalization"


@pytest.mark.parametrize("seeds", ["a,b", "", "-1", "1,1"])
def test_the_regenerate_command_refuses_bad_seeds(seeds, capsys):
    from helpers.results import small_batch_runs
    with pytest.raises(SystemExit) as exc:
        small_batch_runs._main(["--seeds", seeds])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err


def test_committed_tiny_batch_table_is_complete_with_provenance():
    import json
    from helpers.workbook.committed import DATA_DIR, provenance_path, read_csv_rows
    rows = read_csv_rows(DATA_DIR / small_batch_runs.TINY_TABLE, keep_text=("dataset", "norm"))
    table = small_batch_runs.committed_tiny_seeds()
    e = small_batch_runs.TINY_DEFAULTS["run_epochs"]
    for dataset in small_batch_runs.DATASETS:
        for norm, b, epochs in small_batch_runs.tiny_settings(dataset):
            assert sorted(table[(dataset, norm, b, epochs)]) == list(small_batch_runs.TINY_SEEDS)
        steps = {(n, b, ep): {r["steps"] * r["epochs"] for r in table[(dataset, n, b, ep)].values()}
                 for n, b, ep in small_batch_runs.tiny_settings(dataset)}
        (long,), (pairs,) = steps[("allconv_batch", 32, 16 * e)], steps[("allconv_batch", 2, e)]
        assert abs(long - pairs) <= 0.03 * pairs    # equal steps, up to the partial batches dropped (1,408 vs 1,438)
    assert len(rows) == len(small_batch_runs.TINY_SEEDS) * sum(len(small_batch_runs.tiny_settings(d)) for d in small_batch_runs.DATASETS)
    assert all(0.0 <= r["acc"] <= 1.0 for r in rows)
    assert all((r["acc_precise"] == "") == (r["norm"] in ("allconv_group", "group", "layer")) for r in rows)
    info = json.loads(provenance_path(DATA_DIR / small_batch_runs.TINY_TABLE).read_text())
    assert info["command"].startswith("python -m helpers.results.small_batch_runs tiny") and info["rows"] == len(rows)
    assert {"tensorflow", "keras", "started_utc", "machine"} <= set(info)


def test_tiny_settings_and_headline_rows():
    assert [s for s in small_batch_runs.tiny_settings("digits") if not s[0].startswith("allconv")] == [
                      ("batch", 2, 2), ("dense_ln", 2, 2), ("group", 2, 2), ("layer", 2, 2)]
    assert all(n.startswith("allconv_") for n, _, _ in small_batch_runs.tiny_settings("mnist1d"))
    with pytest.raises(ValueError, match="dataset"):
        small_batch_runs.tiny_dataset("cifar")
    tiny = small_batch_runs.committed_tiny_seeds()
    m1d = small_batch_runs.committed_mnist1d_seeds(small_batch_runs.MNIST1D_DEFAULTS["mnist1d_epochs"], small_batch_runs.MNIST1D_DEFAULTS["learning_rate"])
    headline = small_batch_runs.headline_rows(tiny, m1d)
    assert set(headline) == {("digits", n) for n in ("batch", "dense_ln", "group", "layer")} | {
        ("MNIST-1D", n) for n in ("batch", "dense_ln", "group")}
    table = small_batch_runs.allconv_table(tiny)
    assert len(table) == len(small_batch_runs.tiny_settings("mnist1d")) and "seeds" in table.title


def test_page_builder_makes_the_all_convolutional_variant():
    build = small_batch_runs.page_builder()
    model = build("allconv_batch", 0, input_shape=(40, 1))
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("BatchNormalization") == 3 and "GlobalAveragePooling1D" in kinds
    assert [l.name for l in model.layers if type(l).__name__ == "Dense"] == ["classifier"]   # no dense BN
    assert sb.bn_sample_counts(model, 2) == [80, 40, 40]


def test_sweep_trained_restores_a_runs_weights_before_precise_bn(digits):
    n = 128
    sweep = sb.Sweep(digits.x_train[:n], digits.y_train[:n], digits.x_test[:32], digits.y_test[:32],
                     epochs=1, learning_rate=1e-3, seed=0, train_mode=False)
    sweep.run("batch", "iid", 16)
    model = sweep.model("batch")
    precise_var = np.asarray(sb.bn_layers(model)[0].moving_variance).copy()    # after precise BN
    first = sweep._trained[("batch", "iid", 16)]
    sweep.run("batch", "iid", 32)
    restored = sweep.trained("batch", "iid", 16)
    for a, b in zip(restored.get_weights(), first):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.asarray(sb.bn_layers(restored)[0].moving_variance), precise_var)   # as trained


def test_clipping_schedule_sets_the_variables():
    import keras

    class Model:
        optimizer = type("Opt", (), {"iterations": keras.Variable(7)})()
    bounds = {k: keras.Variable(0.0) for k in ("rmin", "rmax", "dmax")}
    callback = sb.clipping_schedule(bounds, lambda step, total: {"rmin": step, "rmax": total, "dmax": 1.5}, 100)
    callback.set_model(Model())
    callback.on_train_batch_begin(0)
    assert [float(bounds[k].numpy()) for k in ("rmin", "rmax", "dmax")] == [7.0, 100.0, 1.5]


@pytest.mark.parametrize("seeds", ["a,b", "-1"])
def test_the_tiny_table_command_refuses_bad_seeds(seeds, capsys):
    with pytest.raises(SystemExit) as exc:
        small_batch_runs._main(["tiny", "--seeds", seeds])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
