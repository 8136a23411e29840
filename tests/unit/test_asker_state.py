"""helpers.spikes.asker_state and run_logs (lesson 07): the data variants, the step, the spike rule,
snapshots, and one committed branch recomputed and judged by the committed seeds' spread."""
import json

import numpy as np
import pytest

from helpers.spikes import asker_state as st
from helpers.spikes import regeneration as regen
from helpers.spikes import run_logs
from helpers.spikes.flags import flag_spikes

SMALL = dict(n_series=96, timesteps=48, n_validation=40, n_monitor=32, frac_series_with_anomaly=0.25)


def test_the_pages_spike_rule_is_the_vectorised_rule():
    import inspect
    from helpers.lessons.l07 import is_spike
    defaults = {k: p.default for k, p in inspect.signature(is_spike).parameters.items() if k in st.SPIKE_RULE}
    assert defaults == st.SPIKE_RULE                       # the page's defaults are the rule the regeneration uses
    rng = np.random.default_rng(3)
    loss = np.exp(rng.normal(np.log(0.01), 0.3, 400))
    loss[[60, 61, 200, 350]] *= [40, 15, 12, 200]
    one_by_one = np.array([is_spike(float(loss[k]), list(loss[:k])) for k in range(len(loss))])
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
    assert regen.reached_step(loss) == 126                      # the median of 50 flips when 26 are low
    assert regen.reached_step(np.full(80, 0.05)) is None


def test_snapshot_round_trip_and_skip_step():
    d = st.variant_data("a", 0, **SMALL)
    run = st.SpikeRun(d, seed=0, batch=16)
    run.train(3)
    state = run.state()
    twin = st.SpikeRun(d, seed=0, batch=16)
    twin.load_state(state)
    for a, b in zip(run.model.get_weights(), twin.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert twin.step == 3 and int(twin.opt.iterations) == 3
    frozen = st.SpikeRun(d, seed=0, remedy="skip_step", is_spike=lambda loss, previous: True, batch=16)
    before = [w.copy() for w in frozen.model.get_weights()]
    frozen.train(4)
    assert all(np.array_equal(a, b) for a, b in zip(before, frozen.model.get_weights()))
    assert np.all(np.asarray(frozen.log["skipped"]) == 1)


def test_clip_flags_steps_over_the_norm():
    d = st.variant_data("a", 0, **SMALL)
    run = st.SpikeRun(d, seed=0, remedy="clip", clip=1e-6, batch=16)
    run.train(3)
    assert np.all(np.asarray(run.log["clipped"]) == 1)
    with pytest.raises(ValueError, match="clip"):
        st.SpikeRun(d, seed=0, remedy="clip")
    with pytest.raises(ValueError, match="remedy"):
        st.SpikeRun(d, seed=0, remedy="gradient_clipping")
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
    run = st.SpikeRun(st.variant_data("d", 3), seed=3)
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
    phases = regen.scratch_jobs([0, 1, 2, 3, 4], tmp_path)
    assert len(phases) == 1                       # at the page's size the clip is set from the committed b run
    planned = phases[0]
    assert len(planned) == len(st.REMEDIES) * 5
    assert {j["clip_from"] for j in planned if j["seed"] == 2} == {str(tmp_path / "b_s2.npz")}
    assert [j["remedy"].startswith("windows") for j in planned] == sorted(j["remedy"].startswith("windows") for j in planned)
    assert {j["out"] for j in planned} == {str(tmp_path / st.SCRATCH_DIR)}


def test_another_size_sets_its_clip_from_its_own_run_in_a_second_phase(tmp_path, capsys):
    first, second = regen.scratch_jobs([0, 1], tmp_path, units=64, remedies=["clip", "windows_centred", "none"])
    out = tmp_path / f"{st.SCRATCH_DIR}_lstm64"
    assert [(j["remedy"], j["seed"]) for j in first] == [("none", 0), ("none", 1), ("windows_centred", 0), ("windows_centred", 1)]
    assert [(j["remedy"], j["clip_from"]) for j in second] == [("clip", str(out / f"scratch_b_none_s{s}.npz")) for s in (0, 1)]
    assert {j["out"] for j in first + second} == {str(out)} and {j["units"] for j in first + second} == {64}
    for argv, message in ((["--units", "64"], "go with --from-scratch"),
                          (["--from-scratch", "--units", "2"], "expected 4-256"),
                          (["--from-scratch", "--units", "64", "--remedies", "clip"], "add none"),
                          (["--from-scratch", "--remedies", "clip,foo"], "unknown foo")):
        with pytest.raises(SystemExit):
            regen.parse_args(argv)
        assert message in capsys.readouterr().err


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
    run = st.SpikeRun(st.variant_data("b", 3), seed=3, remedy="windows_random")
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


def _scratch_log(remedy, seed, loss, pr, moved_series=0):
    n = len(loss)
    return run_logs.RunLog(f"scratch_b_{remedy}_s{seed}", {
        "loss": np.asarray(loss, np.float64), "clipped": np.zeros(n), "skipped": np.zeros(n),
        "positives": np.ones(n), "min_p_positive": np.full(n, 0.5), "grad_norm": np.ones(n),
        "max_series": np.full(n, moved_series), "max_series_loss": np.asarray(loss) * st.DATA["batch"] * 0.9,
        "val_pr_auc": np.asarray(pr, np.float64), "eval_step": np.arange(0, n + 1, 100)},
        {"remedy": remedy, "seed": seed, "final_pr_auc": pr[-1], "event_recall_1fa": 1.0, "seconds_per_step": 0.1})


def test_at_step_reads_the_step_and_the_second_half_before_it():
    loss = np.full(2000, 0.01)
    loss[300] = loss[1500] = 1.0                    # a spike in the second half of 500 steps, one in that of 2,000
    log = _scratch_log("none", 0, loss, np.linspace(0, 1, 21))
    pr, med, spikes = run_logs.at_step(log, 500)
    assert pr == pytest.approx(0.25) and med == pytest.approx(-2.0) and spikes == pytest.approx(4.0)
    row = run_logs.scratch_rows({"x": log})[0]      # at the full length: scratch_rows' own quantities
    assert run_logs.at_step(log, 2000) == pytest.approx((row["final_pr_auc"], row["log10_median_batch_loss"], row["spikes_per_1k"]))
    with pytest.raises(ValueError, match="not evaluated"):
        run_logs.at_step(log, 250)


def test_judge_accepts_a_sample_inside_the_spread_and_refuses_one_outside():
    from helpers.workbook.spread import Recomputed
    recomputed = Recomputed(record=lambda *a: None)
    committed = {0: {"q": 0.50}, 1: {"q": 0.60}, 2: {"q": 0.55}}          # sd 0.05: accepted 0.35–0.75
    assert run_logs.judge(recomputed, {"q": 0.70}, committed, 0, {"q": ("q", 0.01)}, "inside") is True
    assert run_logs.judge(recomputed, {"q": 0.90}, committed, 0, {"q": ("q", 0.01)}, "outside") is False
    assert recomputed.within is False and len(recomputed.rows) == 2
    # judged at a step: a run that learns like the committed ones passes, one that has not learned fails
    logs = {k: _scratch_log("none", k, np.full(2000, 0.01 * (1 + k / 10)), np.linspace(0, 0.8 + k / 20, 21)) for k in (0, 1, 2)}
    like = _scratch_log("none", 0, np.full(2000, 0.011), np.linspace(0, 0.82, 21))
    flat = _scratch_log("none", 0, np.full(2000, 0.3), np.zeros(21))
    assert run_logs.judge_at_step(recomputed, like, logs, 0, 1000, pr_resolution=0.01, label="like") is True
    assert run_logs.judge_at_step(recomputed, flat, logs, 0, 1000, pr_resolution=0.01, label="flat") is False


def test_by_size_pairs_the_runs_present_at_every_size():
    loss = np.full(2000, 0.01)
    loss[1500] = 0.5
    small = {f"scratch_b_{r}_s{k}": _scratch_log(r, k, loss, np.linspace(0, 0.5, 21)) for r in ("none", "clip", "focal") for k in (0, 1)}
    big = {f"scratch_b_{r}_s{k}": _scratch_log(r, k, loss * 2, np.linspace(0, 0.9, 21), moved_series=3)
           for r in ("none", "clip") for k in (0, 1)}
    sized = run_logs.by_size({16: small, 64: big}, moved_of=lambda k: np.arange(10) == 3)
    assert sorted(sized) == [("clip", 0), ("clip", 1), ("none", 0), ("none", 1)]      # focal ran at 16 units only
    x = sized["none", 1]
    assert x[16]["final_pr_auc"] == pytest.approx(0.5) and x[64]["final_pr_auc"] == pytest.approx(0.9)
    assert x[16]["jump_ratio"] == pytest.approx(50.0) and not x[16]["jump_series_moved"] and x[64]["jump_series_moved"]
    table = run_logs.size_table(sized)
    assert len(table.rows) == 4 and "0.500 → 0.900" in table.rows[2] and table.columns[0] == "remedy, seed"


def test_the_64_unit_check_is_its_own_regeneration():
    """data/spike_runs/from_scratch_lstm64/: 64 units, 2 seeds, the clip set from the 64-unit run's own gradient norms."""
    folder = st.scratch_dir(st.find_runs_dir(), 64)
    runs = run_logs.load_runs(folder)
    assert {(log.meta["remedy"], log.meta["seed"]) for log in runs.values()} == {
        (r, k) for r in ("none", "clip", "windows_centred") for k in (0, 1)}
    assert {log.meta["units"] for log in runs.values()} == {64}
    for k in (0, 1):
        none64 = runs[f"scratch_b_none_s{k}"]
        assert runs[f"scratch_b_clip_s{k}"].meta["clip"] == pytest.approx(float(np.percentile(none64["grad_norm"][:2000], 95)))
        small = np.load(st.find_runs_dir() / f"b_s{k}.npz")["loss"][:2000]
        assert not np.allclose(none64["loss"], small)          # another model on the same batches
    provenance = json.loads((folder / "provenance.json").read_text())
    assert "--units 64" in provenance["command"] and provenance["units"] == 64 and len(provenance["runs"]) == 6
