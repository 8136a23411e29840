"""helpers.results.long_runs: lesson 04's committed long runs (data/long_runs.csv), read, compared and regenerated."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.results import long_runs
from helpers.workbook.notebooks import declared_parameters, notebook_path

DEFAULTS = declared_parameters(notebook_path(long_runs.NOTEBOOK))
SETTINGS = {k: (v if k != "seed" else 0) for k, v in DEFAULTS.items() if k in long_runs.SETTINGS}
RUNS = ("plain", "dropout_l2", "noisy_labels", "noisy_groupnorm", "noisy_nonorm", "noisy_regularized")


def test_the_committed_table_holds_every_run_of_seeds_0_1_2_at_the_notebook_defaults():
    table = long_runs.read_long_runs()
    evaluated = [e for e in range(1, DEFAULTS["long_epochs"] + 1) if e % 3 == 0 or e == DEFAULTS["long_epochs"]]
    for seed in (0, 1, 2):
        for run in RUNS:
            rows, at_end, precise = table[(long_runs._key({**SETTINGS, "seed": seed}), run)]
            assert rows[:, 0].tolist() == evaluated
            fit, mode, overfit, gap, val = rows[:, 1:].T
            assert np.all((0 <= fit) & (fit <= 1) & (0 <= val) & (val <= 1))
            assert np.allclose(gap, fit - val, atol=1e-9)     # the reported gap is fit's accuracy − validation
            assert np.all(np.abs(mode) <= 1) and np.all(np.abs(overfit) <= 1)
            assert 0 < at_end <= 1 and 0 < precise <= 1
            assert abs(val[-1] - at_end) <= 1e-9      # the last evaluated validation accuracy is the one at the end
            if run in ("noisy_groupnorm", "noisy_nonorm"):   # no batch statistics: both modes alike, precise BN a no-op
                assert np.all(mode == 0) and at_end == precise


def test_the_provenance_names_the_command_and_its_machine():
    info = json.loads(long_runs.committed.provenance_path(long_runs.TABLE).read_text())
    assert info["command"].startswith("python -m helpers.results.long_runs")
    assert info["seeds"] == [0, 1, 2] and info["notebook"] == long_runs.NOTEBOOK
    rows = sum(1 for _ in open(long_runs.TABLE)) - 1
    assert info["rows"] == rows == len(RUNS) * 3 * len([e for e in range(1, 31) if e % 3 == 0])
    assert {"tensorflow", "keras", "numpy", "machine", "cpu_count", "started_utc", "finished_utc"} <= set(info)


def _fake(value: float):
    calls = []

    def train():
        calls.append(1)
        rows = np.array([[3, 0.5, 0.4, 0.1, 0.4 + value, 0.1 - value], [6, 0.9, 0.0, 0.2, 0.2, 0.7]])
        return rows, 0.7, 0.71
    return train, calls


def test_modes_read_train_and_compare(tmp_path):
    settings = {**SETTINGS, "seed": 5}
    writer = long_runs.LongRuns("regenerate", settings, path=tmp_path / "none.csv")
    train, calls = _fake(0.0)
    writer.get("plain", train)
    assert calls == [1] and writer.compared == [] and writer.read == []
    table = writer.save(tmp_path / "t.csv")

    reader = long_runs.LongRuns("committed", settings, path=table)
    train, calls = _fake(0.0)
    rows, at_end, precise = reader.get("plain", train)
    assert calls == [] and reader.read == ["plain"] and (at_end, precise) == (0.7, 0.71)
    assert rows.shape == (2, 6) and rows[1, 0] == 6
    other, calls = _fake(0.0)
    reader.get("noisy_labels", other)             # not in the table for any seed: trained, nothing to compare
    assert calls == [1] and reader.compared == []

    live = long_runs.LongRuns("live", settings, path=table)
    train, calls = _fake(0.05)                    # the same run but for 0.05 in two columns
    live.get("plain", train)
    assert calls == [1] and live.compared == ["plain"]
    unseen = long_runs.LongRuns("committed", {**settings, "seed": 6}, path=table)
    train, calls = _fake(0.0)
    unseen.get("plain", train)                    # a seed the table lacks: trained, and judged by the seeds it has
    assert calls == [1] and unseen.compared == ["plain"] and unseen.read == []

    elsewhere = long_runs.LongRuns("committed", {**settings, "label_noise_fraction": 0.3}, path=table)
    train, calls = _fake(0.0)
    elsewhere.get("plain", train)                 # other settings are never read
    assert calls == [1] and elsewhere.read == []


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="committed"):
        long_runs.LongRuns("cached", SETTINGS)


@pytest.mark.parametrize("seeds", ["a,b", "", "-1", "1,1", ",".join(map(str, range(11)))])
def test_the_command_refuses_bad_seeds(seeds, capsys):
    with pytest.raises(SystemExit) as exc:
        long_runs.main(["--seeds", seeds])
    assert exc.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_a_retrained_row_is_judged_by_the_committed_seeds_at_its_epoch():
    table = long_runs.LongRuns("committed", SETTINGS)
    seeds_rows = table.seeds_entries("plain")
    assert sorted(seeds_rows) == [0, 1, 2]
    first = {s: rows[0] for s, (rows, _, _) in seeds_rows.items()}
    # a committed seed's own row is inside its seeds' spread, with its own value shown beside it
    spreads = table.spreads("plain", first[1], 1409, 359)
    assert len(spreads) == 5 and all(s.within for s in spreads)
    assert [s.same_seed for s in spreads] == pytest.approx(list(first[0][1:]))   # settings' seed is 0
    # a row whose validation accuracy is 30 points off is caught, and only that column (and the gap) fail
    off = first[1] + np.array([0, 0, 0, -0.3, 0.3, 0.3]) * [1, 1, 1, 1, 1, 1]
    off[5] = first[1][5] - 0.3
    bad = {s.quantity.split(": ")[1]: s.within for s in table.spreads("plain", off, 1409, 359)}
    assert bad["validation"] is False and bad["fit accuracy"] is True
    with pytest.raises(ValueError, match="other epochs"):
        long_runs.row_spreads(first[1], [seeds_rows[0][0][1]], 1409, 359)


def test_judge_trained_judges_every_row_and_the_end_of_each_compared_run(tmp_path):
    from helpers.workbook.spread import Recomputed
    settings = {**SETTINGS, "seed": 5}
    writer = long_runs.LongRuns("regenerate", settings, path=tmp_path / "none.csv")
    writer.get("plain", _fake(0.0)[0])
    table = writer.save(tmp_path / "t.csv")
    live = long_runs.LongRuns("live", settings, path=table)
    found = {}
    assert live.judge_trained(Recomputed(record=found.__setitem__), 1409, 359) is None   # nothing trained yet
    live.get("plain", _fake(0.0)[0])
    recomputed = Recomputed(record=found.__setitem__)
    summary = live.judge_trained(recomputed, 1409, 359)
    assert list(recomputed.rows) == ["plain, epoch 3", "plain, epoch 6", "plain, end"] and recomputed.within
    assert summary.rows == [["plain", 3, "12 of 12"]]        # 5 quantities per epoch, 2 at the end
    assert found == {"committed_rows_recomputed": 3, "committed_rows_within_spread": True}
    far = long_runs.LongRuns("live", settings, path=table)
    far.get("plain", _fake(0.3)[0])                          # far outside one committed seed's values
    assert far.judge_trained(Recomputed(record=found.__setitem__), 1409, 359).rows[0][2] != "12 of 12"


def _run(gap, mode, fit=0.9):
    """Rows (n, 6) with the given reported gap and BN mode mismatch per evaluated epoch (3, 6, 9, ...)."""
    n = len(gap)
    return np.column_stack([3 * np.arange(1, n + 1), np.full(n, fit), mode, gap, gap, np.full(n, 0.5)])


LABELS = {"noisy_labels": "BN", "noisy_groupnorm": "GroupNorm", "noisy_nonorm": "no normalization",
          "noisy_regularized": "BN + dropout + L2"}


def test_gap_creep_starts_after_the_warm_up():
    noisy = _run([0.8, 0.3, 0.1, 0.2, 0.3], [0.8, 0.2, 0.04, 0.01, -0.02])
    clean = _run([0.8, 0.1, 0.05, 0.04, 0.03], [0.8, 0.1, 0.0, 0.0, 0.0])
    warm, growth, clean_growth, mode_after = long_runs.gap_creep(noisy, clean)
    assert warm == 2 and growth == pytest.approx(0.2) and clean_growth == pytest.approx(-0.02)
    assert mode_after == pytest.approx(0.02)
    never = _run([0.8, 0.7], [0.8, 0.7])                     # never warm: the last epoch, nothing after it
    assert long_runs.gap_creep(never, never)[0] == 1 and long_runs.gap_creep(never, never)[3] == 0


def test_creep_summary_reads_the_controls_and_the_precise_bn_gain():
    runs = {"noisy_labels": (_run([0.8, 0.04, 0.3], [0.8, 0.03, 0.0]), 0.6, 0.63),
            "noisy_groupnorm": (_run([0.1, 0.1, 0.4], [0, 0, 0]), 0.5, 0.5),
            "noisy_nonorm": (_run([0.0, 0.0, 0.01], [0, 0, 0], fit=0.62), 0.6, 0.6),
            "noisy_regularized": (_run([0.5, 0.02, 0.1], [0.5, 0.0, 0.0]), 0.7, 0.71)}
    clean = _run([0.8, 0.05, 0.04], [0.8, 0.0, 0.0])
    v = long_runs.creep_summary(runs, clean, LABELS)
    assert v["growth, BN"] == pytest.approx(0.26) and v["growth, GroupNorm"] == pytest.approx(0.3)
    assert v["growth, BN, clean labels"] == pytest.approx(-0.01)
    assert v["no normalization: fit accuracy at the end"] == 0.62
    assert v["final gap, BN − (BN + dropout + L2)"] == pytest.approx(0.2)
    assert v["precise BN at the end: validation gain (BN)"] == pytest.approx(0.03)
    assert v["… ÷ final gap"] == pytest.approx(0.1) and v["BN: overfitting ÷ reported gap, at the end"] == pytest.approx(1)
    table = long_runs.creep_table({"seed 0": v, "seed 1": v}, {"seed 0": v, "seed 1": v}, title="t")
    assert table.columns == ["noisy labels", "seed 0", "seed 1", "over 2 seeds"] and len(table.rows) == len(v)
    noisy = long_runs.noisy_runs_table(runs, LABELS, 1, title="t")
    assert noisy.columns[1:3] == ["gap at epoch 6", "… at 9"]
    assert [r[0] for r in noisy.rows] == list(LABELS.values()) and noisy.rows[0][3] == pytest.approx(0.26)


def test_creep_samples_are_the_committed_seeds_and_a_run_trained_here(tmp_path):
    store = long_runs.LongRuns("committed", SETTINGS)
    runs = {n: store.table_entry(n) for n in LABELS}
    samples, over = store.creep_samples(runs, store.table_entry("plain")[0], LABELS, 0)
    assert list(samples) == list(over) == ["seed 0", "seed 1", "seed 2"]
    assert samples["seed 0"] == long_runs.creep_summary(runs, store.table_entry("plain")[0], LABELS)
    alone = long_runs.LongRuns("regenerate", SETTINGS, path=tmp_path / "none.csv")   # no table: this run is the only sample
    for n in LABELS:
        alone.get(n, lambda n=n: runs[n])
    samples, over = alone.creep_samples(runs, store.table_entry("plain")[0], LABELS, 7)
    assert list(over) == ["seed 7"] and list(samples) == ["seed 7, trained now"]   # the means: over this run


def test_judge_and_save_writes_the_trained_runs_unless_committed(tmp_path, capsys):
    from helpers.workbook.spread import Recomputed
    settings = {**SETTINGS, "seed": 5}
    writer = long_runs.LongRuns("regenerate", settings, path=tmp_path / "none.csv")
    writer.get("plain", _fake(0.0)[0])
    assert writer.judge_and_save(Recomputed(record=lambda *a: None), 1409, 359, tmp_path) == ""
    assert long_runs.rows_path(tmp_path, 5).exists() and "table rows" in capsys.readouterr().out
    live = long_runs.LongRuns("live", settings, path=long_runs.rows_path(tmp_path, 5))
    live.get("plain", _fake(0.0)[0])
    assert live.judge_and_save(Recomputed(record=lambda *a: None), 1409, 359, tmp_path / "b") == "plain"
    reader = long_runs.LongRuns("committed", settings, path=long_runs.rows_path(tmp_path, 5))
    reader.get("plain", _fake(0.0)[0])
    assert reader.judge_and_save(Recomputed(record=lambda *a: None), 1409, 359, tmp_path / "c") == ""
    assert not (tmp_path / "c").exists()


def test_plot_creep_draws_each_run_and_the_clean_one():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = _run([0.8, 0.04, 0.3], [0.8, 0.03, 0.0])
    long_runs.plot_creep({n: (rows, 0.5, 0.5) for n in LABELS}, LABELS, rows, 1, finding="creep")
    ax = plt.gcf().axes[0]
    assert [l.get_label() for l in ax.get_lines()][:5] == [*LABELS.values(), "BN, clean labels"]
    plt.close("all")
