"""What lesson 05 reads off the committed table of runs to convergence and shows of it (helpers.results.converged_runs),
on a small synthetic table whose differences are known."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from helpers.results import converged_runs as converged  # noqa: E402

SEEDS = (0, 1, 2)
END, MINI = converged.SETTINGS["epochs"], converged.MINIATURE_EPOCHS


def _accuracy(seed, run, epoch):
    """A made-up test accuracy: grows with the epoch, 2rep lags 1dev by 0.01 per seed index + 0.02."""
    lag = {"1dev": 0.0, "2rep": 0.02 + 0.01 * seed}.get(run, 0.005)
    return 0.8 + 0.1 * np.log10(epoch) / np.log10(END) - lag + 0.001 * seed


@pytest.fixture
def table():
    return {(s, run): {e: {"test_accuracy": _accuracy(s, run, e), "train_loss": 0.1 + 0.01 * s + 1 / e,
                           "global_batch": converged.RUNS[run][0] * 32, "steps": e * (1438 // (converged.RUNS[run][0] * 32))}
                       for e in converged.RECORDED_EPOCHS}
            for s in SEEDS for run in converged.RUNS}


def test_seed_values_and_their_standard_error(table):
    v = converged.seed_values(table, "2rep", END)
    assert v.shape == (3,) and v == pytest.approx([_accuracy(s, "2rep", END) for s in SEEDS])
    assert converged.seed_standard_error([1.0, 2.0, 3.0]) == pytest.approx(1.0 / np.sqrt(3))


def test_paired_gaps_are_differences_per_seed(table):
    gaps = converged.paired_gaps(table)
    assert list(gaps) == ["equal_epochs", "equal_steps", "converged", "converged_scaled", "warmup_mini", "warmup_end", "plateau"]
    assert gaps["converged"] == pytest.approx([0.02 + 0.01 * s for s in SEEDS])
    expected_steps = [_accuracy(s, "1dev", MINI) - _accuracy(s, "2rep", 2 * MINI) for s in SEEDS]
    assert gaps["equal_steps"] == pytest.approx(expected_steps)
    assert gaps["warmup_end"] == pytest.approx([0, 0, 0])
    shown = converged.paired_gaps_table(gaps, n_test=359)
    assert len(shown) == 7 and shown.column("mean")[2] == pytest.approx(0.03)
    assert shown.column("in test digits (mean)")[2] == pytest.approx(0.03 * 359)


def test_summary_table_and_figures(table):
    summary = converged.summary_table(table)
    assert len(summary) == len(converged.RUNS) and summary.column("global batch")[1] == 64
    assert "3 seeds" in summary.title
    fig, (ax_acc, ax_loss) = converged.plot_converged(table)
    assert len(ax_acc.lines) == len(converged.RUNS) + len(converged.SETTINGS["decay_epochs"])
    runs = {"a": {"test_accuracy": [0.5, 0.6], "steps": [10, 20]}, "b": {"test_accuracy": [0.4, 0.5], "steps": [5, 10]}}
    fig, (ax_e, ax_s) = converged.plot_epochs_and_steps(runs, finding="title")
    assert list(ax_s.lines[1].get_xdata()) == [5, 10] and list(ax_e.lines[1].get_xdata()) == [1, 2]


def test_at_table_settings():
    ok = {"per_replica_batch": 32, "base_learning_rate": 0.05, "warmup_epochs": 1, "epochs": 5}
    assert converged.at_table_settings(ok)
    assert not converged.at_table_settings({**ok, "per_replica_batch": 16})
    assert not converged.at_table_settings({**ok, "epochs": END})          # past the first decay


def test_judge_retrained_counts_rows_and_judges_section3_only_at_the_tables_settings(table, capsys):
    got = {}
    live = {run: {"test_accuracy": [_accuracy(1, run, e) for e in range(1, END + 1)]} for run in converged.HEADLINE}
    section3 = {"4rep": {"test_accuracy": [_accuracy(1, "4rep", e) for e in range(1, MINI + 1)]}}
    settings = {"per_replica_batch": 32, "base_learning_rate": 0.05, "warmup_epochs": 1, "epochs": MINI}
    rec = converged.judge_retrained(live, table, 1, 359, section3=section3, section3_settings=settings,
                                    record=lambda k, v: got.__setitem__(k, v))
    assert got == {"committed_rows_recomputed": 4, "committed_rows_within_spread": True}
    assert len(converged.judged_table(rec, 1, 3)) == 3 * 2 + 1
    live_bad = {**live, "1dev": {"test_accuracy": [0.1] * END}}
    rec = converged.judge_retrained(live_bad, table, 1, 359, section3=section3, section3_settings={**settings, "warmup_epochs": 0},
                                    record=lambda k, v: got.__setitem__(k, v))
    assert got == {"committed_rows_recomputed": 3, "committed_rows_within_spread": False}
    assert "not judged" in capsys.readouterr().out
