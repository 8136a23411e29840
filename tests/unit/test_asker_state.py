"""helpers.spikes.asker_state and run_logs (lesson 07): the data variants, the step, the spike rule,
snapshots, and one committed branch recomputed and judged by the committed seeds' spread."""
import json

import numpy as np
import pytest

from helpers.spikes import asker_state as st
from helpers.spikes import run_logs
from helpers.spikes.flags import flag_spikes

SMALL = dict(n_series=96, timesteps=48, n_validation=40, n_monitor=32, frac_series_with_anomaly=0.25)


def test_spike_on_arrival_is_the_vectorised_rule():
    rng = np.random.default_rng(3)
    loss = np.exp(rng.normal(np.log(0.01), 0.3, 400))
    loss[[60, 61, 200, 350]] *= [40, 15, 12, 200]
    one_by_one = np.array([st.spike_on_arrival(float(loss[k]), list(loss[:k])) for k in range(len(loss))])
    assert one_by_one.sum() >= 4
    np.testing.assert_array_equal(one_by_one, st.spike_mask(loss))
    np.testing.assert_array_equal(st.spike_mask(loss), flag_spikes(loss, window=50, ratio=10.0, min_jump=0.02))


def test_unlearnable_series_carry_labels_away_from_any_signal():
    d = st.variant_data("c", 4, **SMALL)
    clean = st.variant_data("a", 4, **SMALL)
    assert d.moved.sum() == round(0.03 * SMALL["n_series"])
    np.testing.assert_array_equal(d.x, clean.x)                       # same series, other labels
    for i in np.flatnonzero(d.moved):
        onset = np.flatnonzero(clean.y[i])
        labelled = np.flatnonzero(d.y[i])
        assert len(labelled) == 2
        if len(onset):
            assert abs(int(labelled[0]) - int(onset[0])) >= 8
    np.testing.assert_array_equal(d.y[~d.moved], clean.y[~d.moved])


def test_jitter_moves_about_a_tenth_of_the_labelled_series():
    b = st.variant_data("b", 1, **{**SMALL, "n_series": 1000})
    labelled = b.y.max(axis=1) > 0
    assert np.all(labelled[b.moved])                          # only labelled series are moved
    assert np.all(b.y[labelled].sum(axis=1) == 2)             # by a shift, not a loss of labels
    assert 0.04 <= b.moved[labelled].mean() <= 0.2            # binomial range around 10 % of ~250 series


def test_stretches_hold_no_positive_and_have_the_stated_length():
    d = st.variant_data("d", 0, **SMALL)
    stream = st.batch_stream(d, np.random.default_rng(0), batch=8)
    batches = [next(stream) for _ in range(st.DATA["stretch_every"] + st.DATA["stretch"] + 5)]
    positives = np.array([d.y[idx].sum() for idx in batches])
    stretch = positives[st.DATA["stretch_every"]:st.DATA["stretch_every"] + st.DATA["stretch"]]
    assert np.all(stretch == 0)
    assert positives[:st.DATA["stretch_every"]].sum() > 0


def test_centred_windows_keep_the_positives_and_raise_the_share():
    d = st.variant_data("a", 2, **SMALL)
    rng = np.random.default_rng(0)
    xc, yc = st.windows(d.x, d.y, rng, 16, centred=True)
    assert yc.shape == (SMALL["n_series"], 16) and xc.shape == (SMALL["n_series"], 16, 1)
    assert yc.sum() == d.y.sum()                              # every labelled series keeps both positives
    assert st.window_positive_weight(d, 16, centred=True) < st.window_positive_weight(d, 16, centred=False)


def test_reached_step():
    loss = np.r_[np.full(100, 0.05), np.full(100, 0.001)]
    assert st.reached_step(loss) == 126                      # the median of 50 flips when 26 are low
    assert st.reached_step(np.full(80, 0.05)) is None


def test_snapshot_round_trip_and_skip_step():
    d = st.variant_data("a", 0, **SMALL)
    run = st.Run(d, seed=0, batch=16)
    run.train(3)
    state = run.state()
    twin = st.Run(d, seed=0, batch=16)
    twin.load_state(state)
    for a, b in zip(run.model.get_weights(), twin.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert twin.step == 3 and int(twin.opt.iterations) == 3
    frozen = st.Run(d, seed=0, remedy="skip_step", is_spike=lambda loss, previous: True, batch=16)
    before = [w.copy() for w in frozen.model.get_weights()]
    frozen.train(4)
    assert all(np.array_equal(a, b) for a, b in zip(before, frozen.model.get_weights()))
    assert np.all(np.asarray(frozen.log["skipped"]) == 1)


def test_clip_flags_steps_over_the_norm():
    d = st.variant_data("a", 0, **SMALL)
    run = st.Run(d, seed=0, remedy="clip", clip=1e-6, batch=16)
    run.train(3)
    assert np.all(np.asarray(run.log["clipped"]) == 1)
    with pytest.raises(ValueError, match="clip"):
        st.Run(d, seed=0, remedy="clip")
    with pytest.raises(ValueError, match="remedy"):
        st.Run(d, seed=0, remedy="gradient_clipping")
    with pytest.raises(ValueError, match="batch"):
        next(st.batch_stream(d, np.random.default_rng(0), batch=SMALL["n_series"] + 1))


def test_run_names_and_biggest_spike():
    assert run_logs.parse_name("a_s3") == {"source": None, "variant": "a", "remedy": "none", "seed": 3}
    assert run_logs.parse_name("b_to_b_beta2_0.99_s1")["remedy"] == "beta2_0.99"
    with pytest.raises(ValueError):
        run_logs.parse_name("bogus")
    loss = np.full(200, 0.01)
    loss[120] = 2.0
    loss[121:140] = 0.05
    n = len(loss)
    log = run_logs.RunLog("a_s0", {"loss": loss, "positives": np.full(n, 3.0), "min_p_positive": np.full(n, 0.5),
                                   "grad_norm": np.ones(n), "max_series": np.arange(n),
                                   "max_series_loss": loss * st.DATA["batch"] * 0.75}, {})
    big = run_logs.biggest_spike(log, 0, moved=np.arange(n) == 120)
    assert big["step"] == 120 and big["ratio"] == pytest.approx(200.0)
    assert big["series_moved"] and big["series_share"] == pytest.approx(0.75)
    assert big["recovery_steps"] == 16     # from step 136 the next 10 hold six 0.01s: their median is back at 0.01
    # a branch: its first step is judged against the source run's last losses
    branch = run_logs.RunLog("a_to_c_none_s0", {k: v[120:] for k, v in log.arrays.items()}, {"from_step": 120})
    assert run_logs.biggest_spike(branch, 0)["ratio"] == 0.0 or run_logs.biggest_spike(branch, 0)["step"] != 0
    with_history = run_logs.biggest_spike(branch, 0, history=loss[70:120])
    assert with_history["step"] == 0 and with_history["ratio"] == pytest.approx(200.0)
    assert run_logs.spikes_per_1k(branch["loss"], 0, loss[70:120]) == pytest.approx(1000 / 80)


def test_a_committed_branch_recomputed_within_the_seeds_spread():
    """The variant-d branch of seed 3 (not one the notebook recomputes), retrained from its committed snapshot."""
    from helpers.workbook.spread import Spread
    runs = run_logs.load_runs(st.find_runs_dir())
    committed = [runs[f"a_to_d_none_s{s}"] for s in range(5)]
    snap = dict(np.load(st.find_runs_dir() / "snapshots" / "a_s3.npz"))
    run = st.Run(st.variant_data("d", 3), seed=3)
    run.load_state(snap)
    run.train(st.BRANCH_STEPS)
    live = {"spikes_per_1k": run_logs.spikes_per_1k(run.log["loss"]), **run.final_metrics()}
    assert Spread("spikes / 1,000", live["spikes_per_1k"], [run_logs.spikes_per_1k(c["loss"]) for c in committed],
                  resolution=1000 / st.BRANCH_STEPS).within
    assert Spread("final PR-AUC", live["final_pr_auc"], [c.meta["final_pr_auc"] for c in committed],
                  resolution=1 / int(run.data.val.y.sum())).within
    provenance = json.loads((st.find_runs_dir() / "provenance.json").read_text())
    assert "a_to_d_none_s3.npz" in provenance["runs"]


def test_from_scratch_needs_the_b_runs_and_orders_the_windows_last(tmp_path, capsys):
    assert st.main(["--from-scratch", "--seeds", "0,1", "--out", str(tmp_path)]) == 2
    assert "b_s0.npz, b_s1.npz" in capsys.readouterr().err
    assert not (tmp_path / st.SCRATCH_DIR).exists()
    planned = st.scratch_jobs([0, 1, 2, 3, 4], tmp_path)
    assert len(planned) == len(st.REMEDIES) * 5
    assert [j["remedy"].startswith("windows") for j in planned] == sorted(j["remedy"].startswith("windows") for j in planned)
    assert {j["out"] for j in planned} == {str(tmp_path / st.SCRATCH_DIR)}


def test_scratch_rows_count_after_step_1000_and_find_the_target():
    n = 2000
    loss = np.full(n, 0.01)
    loss[[500, 1500]] = 1.0                       # one spike before step 1,000 (not counted), one after
    log = run_logs.RunLog("x", {"loss": loss, "clipped": np.r_[np.ones(100), np.zeros(n - 100)], "skipped": np.zeros(n),
                                "val_pr_auc": np.array([0.0, 0.2, 0.49, 0.5, 0.7]),
                                "eval_step": np.array([0, 500, 1000, 1500, 2000])},
                          {"remedy": "clip", "seed": 7, "final_pr_auc": 0.7, "event_recall_1fa": 0.5,
                           "seconds_per_step": 0.1, "clip": 0.3})
    row = run_logs.scratch_rows({"x": log})[0]
    assert row["steps_to_target"] == 1500 and row["spikes_per_1k"] == pytest.approx(1.0)
    assert row["clipped_fraction"] == pytest.approx(0.05) and row["seed"] == 7
    assert run_logs.scratch_rows({"x": log}, target=0.9)[0]["steps_to_target"] is None


def test_a_committed_run_from_the_first_step_recomputed_within_the_seeds_spread():
    """Random windows from the first step, seed 3 (the notebook's runs use seeds 0-2), retrained in full."""
    from helpers.workbook.spread import Spread
    rows = [x for x in run_logs.scratch_rows(run_logs.load_runs(st.find_runs_dir() / st.SCRATCH_DIR))
            if x["remedy"] == "windows_random"]
    assert sorted(x["seed"] for x in rows) == [0, 1, 2, 3, 4]
    run = st.Run(st.variant_data("b", 3), seed=3, remedy="windows_random")
    run.train(st.SCRATCH_STEPS)
    run.evaluate()
    live = run_logs.scratch_rows({"live": run_logs.RunLog("live", run.arrays(), {
        "remedy": "windows_random", "seed": 3, "seconds_per_step": 0.0, **run.final_metrics()})})[0]
    assert Spread("val PR-AUC", live["final_pr_auc"], [x["final_pr_auc"] for x in rows],
                  resolution=1 / int(run.data.val.y.sum())).within
    assert Spread("spikes / 1,000", live["spikes_per_1k"], [x["spikes_per_1k"] for x in rows], resolution=1.0).within
    provenance = json.loads((st.find_runs_dir() / st.SCRATCH_DIR / "provenance.json").read_text())
    assert provenance["command"].endswith("--from-scratch") and "scratch_b_windows_random_s3.npz" in provenance["runs"]


def test_per_seed_and_wins_over_none_pair_seeds():
    rows = [{"remedy": "none", "seed": 0, "final_pr_auc": 0.5}, {"remedy": "none", "seed": 1, "final_pr_auc": 0.4},
            {"remedy": "clip", "seed": 1, "final_pr_auc": 0.45}, {"remedy": "clip", "seed": 0, "final_pr_auc": 0.3}]
    assert run_logs.per_seed(rows, "clip") == {1: 0.45, 0: 0.3}
    assert run_logs.wins_over_none(rows, "clip") == 1     # paired by seed, not by order: only seed 1 is above
    assert run_logs.wins_over_none(rows, "none") == 0
