"""Unit tests for helpers.spikes: running-mean recovery, spike flags, intervals,
the inspector callback, summaries, and the determinism the committed spike map relies on."""
import numpy as np
import pytest

from helpers import imbalanced as imb
from helpers import spikes


def test_undo_running_mean_recovers_batch_values():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.01, 3.0, 9)
    sizes = np.array([32] * 8 + [11])
    running = np.cumsum(losses * sizes) / np.cumsum(sizes)  # what Keras 3 logs
    assert spikes.undo_running_mean(running, sizes) == pytest.approx(losses, rel=1e-9)


def test_flag_spikes_needs_ratio_and_size():
    flat = np.full(30, 0.01)
    small = flat.copy(); small[20] = 0.05          # 5× but only 0.04 above: flagged at min_jump 0.02
    tiny = flat.copy(); tiny[20] = 0.025           # 2.5×: below the ratio
    assert spikes.flag_spikes(small, ratio=3, min_jump=0.02)[20]
    assert not spikes.flag_spikes(small, ratio=3, min_jump=0.1).any()
    assert not spikes.flag_spikes(tiny, ratio=3, min_jump=0.001).any()
    descent = np.geomspace(2.0, 0.01, 30)         # a falling loss is never a spike
    assert not spikes.flag_spikes(descent).any()


def test_wilson_interval_known_values():
    lo, hi = spikes.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = spikes.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_inspector_recovers_true_batch_losses_from_keras_logs():
    import keras
    d = imb.make_series(40, 16, frac_series_with_anomaly=0.5, seed=0)
    keras.utils.set_random_seed(0)
    model = spikes.inspected_tagger(4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    w = imb.timestep_weights(d.y, 20.0)
    insp = spikes.SpikeInspector(d.x[:8], d.y[:8], w[:8], every=2, batch_sizes_per_epoch=[16, 16, 8])
    model.fit(d.x, d.y[..., None], sample_weight=w, batch_size=16, epochs=2, verbose=0, callbacks=[insp])
    assert len(insp.batch_loss) == 6 and len(insp.monitor_loss) == 4
    assert insp.batch_loss == pytest.approx(insp.raw_batch_loss, rel=1e-4)
    assert not np.allclose(insp.keras_loss[1:3], insp.raw_batch_loss[1:3], rtol=1e-3)  # logs are running means


def test_summaries_and_choice():
    rows = []
    for seed, bce in ((0, 0.9), (2, 0.4)):
        common = {"seed": seed, "normal": 20, "missed_first_normal": 3, "pr_auc_final": 0.9}
        rows.append({**common, "remedy": "baseline", "quiet": 100, "first_normal_bce": bce, "recovery_steps": 10,
                     "pr_auc_after_quiet": 0.2})
        rows.append({**common, "remedy": "baseline", "quiet": 20, "first_normal_bce": bce / 10, "recovery_steps": 0,
                     "pr_auc_after_quiet": 0.85})
        rows.append({**common, "remedy": "shuffled", "quiet": 0, "first_normal_bce": 0.02, "recovery_steps": 0,
                     "pr_auc_after_quiet": 0.85})
        rows.append({**common, "remedy": "focal", "quiet": 100, "first_normal_bce": 0.03, "recovery_steps": "",
                     "pr_auc_after_quiet": 0.78})
    summary = {r["remedy"]: r for r in spikes.summarise_stretch(rows)}
    assert set(summary) == {"baseline", "shuffled", "focal"}          # remedies without rows are left out
    assert summary["baseline"]["first ordinary batch (median)"] == 0.65   # the 100-batch rows only
    assert summary["baseline"]["first ordinary batch (largest)"] == 0.9
    assert summary["shuffled"]["seeds"] == 2                              # the control, whatever its length
    assert summary["focal"]["seeds not back"] == 2 and np.isnan(summary["focal"]["steps back to the target (median)"])
    assert spikes.summarise_stretch(rows, quiet=20)[0]["first ordinary batch (median)"] == 0.065
    cells = spikes.summarise_spike_map([{"learning_rate": 0.1, "positive_weight": "30.0", "seed": s, "spiked": s % 2,
                                         "max_monitored_ratio": 2.0, "pr_auc": 1.0} for s in range(10)])
    assert cells[0]["fraction"] == 0.5 and cells[0]["ci_low"] < 0.5 < cells[0]["ci_high"]


def test_train_run_is_deterministic_and_logs_every_step():
    split = spikes.make_split(100, 64, seed=5, monitor_series=8)
    kw = dict(remedy="weighted", learning_rate=0.03, positive_weight=50.0, epochs=2, batch_size=16, units=4, seed=5)
    a, _ = spikes.train_run(split, **kw)
    b, _ = spikes.train_run(split, **kw)
    steps = 2 * (75 // 16)
    assert len(a.batch_loss) == steps and len(a.grad_norm) == steps and len(a.monitor_loss) == 1 + steps // 2
    assert np.array_equal(a.batch_loss, b.batch_loss) and np.array_equal(a.monitor_loss, b.monitor_loss)


def test_replay_until_spike_reproduces_the_weighted_run():
    """The replay the lesson snapshots is the same run as train_run's: same losses, same monitored
    points; with a rule that never fires it runs to the end, with one it stops `after` steps past it."""
    split = spikes.make_split(100, 64, seed=5, monitor_series=8)
    kw = dict(learning_rate=0.03, positive_weight=50.0, epochs=2, batch_size=16, units=4, seed=5)
    run, _ = spikes.train_run(split, remedy="weighted", **kw)
    snap = lambda model, opt: [v.numpy() for v in model.trainable_variables]
    full = spikes.replay_until_spike(split, snapshot=snap, is_spike=lambda prev, v: False, **kw)
    assert full["flagged_step"] is None and len(full["snapshots"]) == len(run.batch_loss) + 1
    assert np.array_equal(full["batch_loss"], run.batch_loss)
    assert np.array_equal(full["monitor_loss"][::2], run.monitor_loss)
    fires = spikes.replay_until_spike(split, snapshot=snap, is_spike=lambda prev, v: len(prev) >= 2, after=1, **kw)
    assert fires["flagged_step"] == 4 and len(fires["batch_loss"]) == 5
    assert np.array_equal(fires["batch_loss"], run.batch_loss[:5])


def test_clipping_hardly_changes_adams_first_step():
    """Adam's first update is m̂/(√v̂+ε) = g/(|g|+ε) per coordinate: scale-free, so clipping the gradient's
    norm to 1e-3 leaves it almost unchanged (issue 13's mechanism); later steps then diverge."""
    split = spikes.make_split(100, 64, seed=6, monitor_series=8)
    kw = dict(learning_rate=0.03, positive_weight=50.0, epochs=2, batch_size=16, units=4, seed=6)
    free, _ = spikes.train_run(split, remedy="weighted", **kw)
    clipped, _ = spikes.train_run(split, remedy="clip", clipnorm=1e-3, **kw)
    assert clipped.clipnorm == 1e-3 and free.clipnorm is None
    assert clipped.grad_norm[0] > 100 * 1e-3            # the clip really scaled the first gradient down
    assert clipped.batch_loss[0] == pytest.approx(free.batch_loss[0], rel=1e-6)   # same init, same batch
    assert clipped.batch_loss[1] == pytest.approx(free.batch_loss[1], rel=2e-2)   # after one Adam step
    assert not np.allclose(clipped.batch_loss, free.batch_loss, rtol=1e-3)        # but the runs differ later


def test_one_running_median_behind_ratio_jump_and_flag():
    v = np.array([1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.2, 4.0])
    ref = spikes.running_median(v, window=3)
    assert np.isnan(ref[:3]).all() and ref[3:] == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.2])
    assert spikes.running_median_ratio(v, window=3)[3:] == pytest.approx(v[3:] / ref[3:])
    assert spikes.jumps_above_median(v, window=3) == pytest.approx(v[3:] - ref[3:])
    # step 4: 5.0 vs median 1.0 (ratio 5, jump 4); step 7: 4.0 vs median(5, 1, 1.2) = 1.2 (ratio 3.3, jump 2.8)
    assert np.flatnonzero(spikes.flag_spikes(v, window=3, ratio=3.0, min_jump=2.0)).tolist() == [4, 7]
    assert np.flatnonzero(spikes.flag_spikes(v, window=3, ratio=3.0, min_jump=3.0)).tolist() == [4]
    assert np.flatnonzero(spikes.flag_spikes(v, window=3, ratio=3.5, min_jump=2.0)).tolist() == [4]
    assert not spikes.flag_spikes(v[:3]).any()                                       # too few points


def _within_committed_spread(live, rows, columns, seed, **resolution):
    """The rule of helpers.workbook.spread: a recomputed row is one more sample of the committed seeds."""
    spreads = spikes.column_spreads(live, rows, columns, seed=seed, resolution=resolution)
    assert all(s.within for s in spreads), "; ".join(s.describe() for s in spreads)


def test_a_committed_remedies_row_is_reproduced():
    """A row the notebook's seeds 0-2 do not recompute: the baseline of checkpoint 2 after 20 quiet batches,
    judged by the committed seeds' baseline rows at 20 quiet batches."""
    rows = spikes.read_csv_rows(spikes.DATA_DIR / "remedies.csv", keep_text=("remedy",))
    committed = [r for r in rows if r["remedy"] == "baseline" and r["quiet"] == 20]
    live = spikes.stretch_row(spikes.stretch_run(2, "baseline", quiet=20))
    _within_committed_spread(live, committed, ("quiet_loss_last", "first_normal_bce", "missed_first_normal",
                                               "pr_auc_after_quiet", "pr_auc_final", "max_batch_bce_after"), 2,
                             missed_first_normal=max(live["missed_first_normal"], 1) ** 0.5)
    with pytest.raises(ValueError, match="remedy must be one of"):
        spikes.stretch_run(2, "clip")


def test_checkpoints_hold_the_committed_fits():
    """Each committed checkpoint is its seed's asker-regime model at the fitted step of data/asker_regime.csv."""
    asker = {r["seed"]: r for r in spikes.read_csv_rows(spikes.DATA_DIR / "asker_regime.csv") if r["label_jitter"] == 0}
    listed = spikes.read_csv_rows(spikes.CHECKPOINT_DIR / "checkpoints.csv")
    assert [r["seed"] for r in listed] == list(spikes.STRETCH_DEFAULTS["seeds"])
    trainer = spikes.trainer_for(spikes.ASKER_DEFAULTS["units"], jit_compile=False)
    for r in listed:
        meta = spikes.load_checkpoint(trainer, spikes.checkpoint_path(r["seed"]))
        assert meta["step"] == asker[r["seed"]]["fitted_step"] == r["step"]
        assert int(trainer.optimizer.iterations.numpy()) == meta["step"]     # Adam's state came with the weights
        assert meta["pr_auc"] == pytest.approx(asker[r["seed"]]["pr_auc_at_fit"], abs=0.005)


def test_regenerate_refuses_costly_arguments(capsys):
    from helpers.spikes import regenerate
    for argv in (["spike_map", "--seeds", "500"], ["remedies", "--seeds", "1"], ["checkpoints", "--seeds", "0,x"],
                 ["spike_map", "--learning-rates", "0.1,0.2,0.3,0.4,0.5,0.6,0.7"]):
        with pytest.raises(SystemExit) as exc:
            regenerate.main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds must be 1–50" in err and "no checkpoint for seed(s) [1]" in err
    assert "expected comma-separated integers" in err


def test_regenerate_writes_rows_and_provenance(tmp_path):
    import json
    from helpers.spikes import committed, regenerate
    out = tmp_path / "map.csv"
    regenerate.main(["spike_map", "--out", str(out), "--seeds", "1", "--first-seed", "7",
                     "--learning-rates", "0.1", "--positive-weights", "30"])
    rows = spikes.read_spike_map(out)
    assert [(r["seed"], r["learning_rate"], r["positive_weight"]) for r in rows] == [(7, 0.1, "30.0")]
    info = json.loads(committed.provenance_path(out).read_text())
    assert info["rows"] == 1 and "--first-seed 7" in info["command"]
    for key in ("tensorflow", "keras", "numpy", "python", "machine", "cpu_count", "started_utc", "finished_utc"):
        assert info[key] not in ("", None), key


def test_after_fit_summary_counts_only_past_the_fit():
    """Spikes and batch losses before the fitted step are ignored; a spike after it is counted."""
    check = spikes.ASKER_DEFAULTS["check_step"]
    n = 200
    ms = np.arange(0, n + 1, 2)
    ml = np.full(len(ms), 0.05)
    ml[5] = 5.0                       # a spike at step 10, during the descent
    ml[80] = 1.0                      # a spike at step 160, after the fit
    bl = np.full(n, 0.01)
    bl[3], bl[150] = 9.0, 0.5          # the largest batch loss after the fit is at step 151
    pos = np.arange(n)
    log = {"monitor_steps": ms, "monitor_loss": ml, "batch_loss": bl, "batch_positives": pos}
    out = spikes.after_fit_summary(log, 100, n)
    assert out["spikes_after_fit"] == 1
    assert out["max_batch_loss_after_fit"] == 0.5 and out["positives_in_max_batch"] == 150
    assert out["median_batch_loss_after_fit"] == pytest.approx(0.01)
    assert out["max_monitored_ratio_after_fit"] == pytest.approx(20.0)
    assert out["monitor_loss_at_check"] == pytest.approx(ml[ms == check][0])
    assert out["batch_loss_sum_to_check"] == pytest.approx(bl[:check].sum())
    never = spikes.after_fit_summary(log, None, n)
    assert never["spikes_after_fit"] == 0 and np.isnan(never["max_batch_loss_after_fit"])


def test_a_committed_asker_row_is_reproduced():
    """Seed 3's first check_step steps (the notebook's seeds 0-2 retrain rows 0-2), judged by the table's seeds."""
    rows = [r for r in spikes.read_csv_rows(spikes.DATA_DIR / "asker_regime.csv") if r["label_jitter"] == 0]
    committed = next(r for r in rows if r["seed"] == 3)
    live = spikes.asker_run(3, steps=spikes.ASKER_DEFAULTS["check_step"], evaluate=False)
    _within_committed_spread(live, rows, ("monitor_loss_at_check", "batch_loss_sum_to_check"), 3)
    assert len(live["batch_loss"]) == spikes.ASKER_DEFAULTS["check_step"]
    assert live["positive_share"] == pytest.approx(committed["positive_share"], rel=1e-4)


def test_regenerate_refuses_bad_label_jitters_and_jobs(capsys):
    from helpers.spikes import regenerate
    for bad in ("0,2", "a", "0,0.1,0.2,0.3,0.4"):
        with pytest.raises(SystemExit) as exc:
            regenerate.main(["asker", "--label-jitters", bad])
        assert exc.value.code == 2
    for argv in (["asker", "--jobs", "9"], ["asker", "--steps", "10"], ["asker", "--steps", "100000"]):
        with pytest.raises(SystemExit) as exc:
            regenerate.main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--label-jitters must be 1–4 comma-separated values in [0, 1]" in err and "--jobs must be 1–8" in err
    assert "--steps must be 30–5000, got 10" in err and "got 100000" in err


def test_run_parts_respects_order_dependencies_and_failures(tmp_path):
    """The scheduler of `regenerate all`: at most `jobs` children at once, a task only after the tasks it
    needs, and a failed part stops what depends on it with a message naming both."""
    import subprocess
    import sys
    from helpers.spikes import regenerate
    log = tmp_path / "log.txt"

    def launch(argv):   # a child that logs its start and end, and fails when asked to
        name, fail = argv
        code = (f"import time; open({str(log)!r}, 'a').write('start {name}\\n'); time.sleep(0.3); "
                f"open({str(log)!r}, 'a').write('end {name}\\n'); raise SystemExit({int(fail)})")
        return subprocess.Popen([sys.executable, "-c", code])

    tasks = [{"name": "a", "argv": ["a", False]}, {"name": "b", "argv": ["b", False]},
             {"name": "c", "argv": ["c", False], "after": ["a"]}, {"name": "d", "argv": ["d", False]}]
    regenerate._run_parts(tasks, 2, launch=launch, poll_seconds=0.05)
    events = log.read_text().split("\n")[:-1]
    assert sorted(events) == sorted(f"{k} {n}" for n in "abcd" for k in ("start", "end"))
    assert events.index("start c") > events.index("end a")
    running = 0
    for e in events:
        running += 1 if e.startswith("start") else -1
        assert running <= 2
    log.unlink()
    tasks = [{"name": "a", "argv": ["a", True]}, {"name": "c", "argv": ["c", False], "after": ["a"]},
             {"name": "d", "argv": ["d", False]}]
    with pytest.raises(SystemExit, match=r"failed \['a \(exit 1\)'\], not run \['c'\]"):
        regenerate._run_parts(tasks, 2, launch=launch, poll_seconds=0.05)
    assert "start c" not in log.read_text() and "end d" in log.read_text()


def test_merged_parts_reproduce_a_table(tmp_path):
    """`regenerate all` writes each table from its children's parts: split the committed remedies and
    spike-map tables into parts and merge them back — the same rows, byte for byte."""
    import json
    from helpers.spikes import committed, regenerate
    for name, columns, key in (("remedies.csv", spikes.STRETCH_COLUMNS, lambda r: r["seed"]),
                               ("spike_map.csv", committed.SPIKE_MAP_COLUMNS, lambda r: (r["seed"], r["learning_rate"]))):
        lines = (spikes.DATA_DIR / name).read_text().splitlines(keepends=True)
        header, body = lines[0], lines[1:]
        parts = [tmp_path / f"{name}.part{k}.csv" for k in range(2)]
        for k, part in enumerate(parts[::-1]):          # the second half first: the merge sorts
            rows = body[:len(body) // 2] if k else body[len(body) // 2:]
            part.write_text(header + "".join(rows))
            committed.provenance_path(part).write_text(json.dumps({"part": k}))
        out = regenerate._merge(tmp_path / name, columns, parts, "test", committed.utc_now(), key=key)
        assert out.read_text() == "".join(lines), name
        info = json.loads(committed.provenance_path(out).read_text())
        assert info["rows"] == len(body) and len(info["parts"]) == 2


def test_asker_run_saves_its_checkpoint_at_the_fit(tmp_path):
    """The checkpoint an asker run saves as it passes the fit is the state of the same run stopped there
    (here the fit is made to come at the first evaluation, step 8, by a target of 0)."""
    path = tmp_path / "seed4.npz"
    run = spikes.asker_run(4, steps=16, fit_target=0.0, eval_every=8, checkpoint_to=path)
    assert run["fitted_step"] == 8
    spikes.asker_run(4, steps=8, evaluate=False)
    trainer = spikes.trainer_for(spikes.ASKER_DEFAULTS["units"], jit_compile=False)
    with np.load(path) as z:
        import json
        meta = json.loads(str(z["meta"]))
        for i, w in enumerate(trainer.model.get_weights()):
            np.testing.assert_array_equal(z[f"w{i}"], w)
        assert int(z["opt:iteration"]) == 8 == int(trainer.optimizer.iterations.numpy())
    assert meta["step"] == 8 and meta["pr_auc"] == pytest.approx(run["eval_pr_auc"][0], abs=1e-4)


def test_asker_run_ends_after_fit_steps_after_its_fit():
    """A run stops `after_fit_steps` steps after its fit (fit made to come at step 8 by a target of 0), with the
    same batch losses as a run that is not ended early; the row's pr_auc_curve holds every evaluation."""
    short = spikes.asker_run(4, steps=40, fit_target=0.0, eval_every=8, after_fit_steps=12)
    full = spikes.asker_run(4, steps=24, fit_target=0.0, eval_every=8, after_fit_steps=None)
    assert short["fitted_step"] == 8 and len(short["batch_loss"]) == 20 and len(full["batch_loss"]) == 24
    np.testing.assert_array_equal(short["batch_loss"], full["batch_loss"][:20])
    row = spikes.asker_row(short)
    assert row["steps"] == 20 and list(spikes.pr_auc_curve(row)) == [8, 16, 20]
    assert spikes.pr_auc_curve(row)[20] == row["pr_auc_final"]
    never = spikes.asker_run(4, steps=16, fit_target=1.1, eval_every=8, after_fit_steps=4)   # never fits: the cap
    assert never["fitted_step"] is None and len(never["batch_loss"]) == 16


def test_a_committed_from_scratch_row_is_reproduced():
    """The row the notebook's seeds 0-2 do not retrain: checkpoint seed 2 with ε = 1e-3 from the first step
    (its first check_step steps against the table), and the remedy's setting really reaches Adam."""
    rows = spikes.read_csv_rows(spikes.DATA_DIR / "from_scratch.csv", keep_text=("remedy",))
    live = spikes.scratch_run(2, "epsilon_1e-3", steps=spikes.ASKER_DEFAULTS["check_step"], evaluate=False)
    _within_committed_spread(live, [r for r in rows if r["remedy"] == "epsilon_1e-3"],
                             ("monitor_loss_at_check", "batch_loss_sum_to_check"), 2)
    trainer = spikes.trainer_for(spikes.ASKER_DEFAULTS["units"], jit_compile=False, adam={"epsilon": 1e-3})
    assert trainer.optimizer.epsilon == 1e-3
    assert {r["remedy"] for r in rows} == set(spikes.SCRATCH_DEFAULTS["remedies"])
    with pytest.raises(ValueError, match="remedy must be one of"):
        spikes.scratch_run(2, "focal")
