"""Pictures and widget views of lesson 06 (plumbing: each figure states its finding in the title).

    plot_example_series, plot_batch_vs_monitored, plot_spike_map, plot_run, plot_pr_curve,
    plot_fit_curves (the asker-regime seeds' validation PR-AUC by step)
    mechanism_table(...)   the arithmetic of one miss as a Table (the widget)
    figure_png(fig)        PNG bytes of a figure (widgets show cached images)
"""
from __future__ import annotations

import numpy as np

from .. import imbalanced as imb
from .sweeps import _weight_key
from .training import RunResult


def plot_example_series(data: imb.Series, n: int = 3, zoom: int = 12):
    """Anomalous series (top row, full length) and a ±zoom window around each anomaly
    (bottom row), labelled steps marked. Returns the figure."""
    from ..workbook.plotting import figure
    idx = np.flatnonzero(data.has_anomaly)[:n]
    fig, axes = figure(len(idx), 2, finding="The anomaly is a 3-step zigzag: visible in its window, "
                                            "not by its height")
    axes = np.atleast_2d(axes)
    for k, i in enumerate(idx):
        x, y, s = data.x[i, :, 0], data.y[i], int(data.onsets[i])
        for row, (lo, hi) in enumerate([(0, data.timesteps), (max(0, s - zoom), min(data.timesteps, s + zoom))]):
            ax = axes[row, k]
            t = np.arange(lo, hi)
            ax.plot(t, x[lo:hi], lw=1)
            ax.scatter(t[y[lo:hi] > 0], x[lo:hi][y[lo:hi] > 0], color="red", zorder=3, label="labelled anomaly")
            ax.set_xlabel("timestep")
            ax.set_ylabel("value (a.u.)")
            ax.set_title(f"series {i}" + (" (zoom)" if row else ""), fontsize=9)
    axes[0, 0].legend(loc="lower left")
    return fig


def plot_batch_vs_monitored(res: RunResult, finding: str):
    """Per-batch training loss (coloured by labelled steps in the batch) and the
    monitored loss on the fixed set, log scale. Returns the figure."""
    from ..workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=9, height=3.8)
    steps = np.arange(1, len(res.batch_loss) + 1)
    sc = ax.scatter(steps, res.batch_loss, c=res.batch_positives, s=9, cmap="viridis", label="per-batch loss")
    ax.plot(res.monitor_steps, res.monitor_loss, color="black", lw=1.4, label="monitored loss (fixed set)")
    flagged = res.monitor_steps[res.spikes]
    ax.scatter(flagged, res.monitor_loss[res.spikes], marker="x", color="red", s=60, zorder=4,
               label="flagged monitored spike")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted BCE, mean(w·l)")
    fig.colorbar(sc, ax=ax, label="labelled steps in the batch")
    ax.legend(loc="upper right")
    return fig


def plot_spike_map(summary: list[dict], finding: str):
    """Fraction of seeds with a monitored spike vs learning rate, one line per
    positive weight, with 95% Wilson intervals. Returns the figure."""
    from ..workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=7.5, height=4)
    weights = sorted({r["positive_weight"] for r in summary}, key=_weight_key)
    for j, w in enumerate(weights):
        rs = [r for r in summary if r["positive_weight"] == w]
        lr = np.array([r["learning_rate"] for r in rs]) * (1 + 0.06 * (j - (len(weights) - 1) / 2))
        f = np.array([r["fraction"] for r in rs])
        err = np.array([[r["fraction"] - r["ci_low"] for r in rs], [r["ci_high"] - r["fraction"] for r in rs]])
        ax.errorbar(lr, f, yerr=err, marker="o", capsize=4, label=f"positive weight {w}")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("Adam learning rate")
    ax.set_ylabel("fraction of seeds with a monitored spike")
    ax.legend(loc="upper left")
    return fig


def plot_run(res: RunResult, title: str | None = None):
    """One recorded run: per-batch and monitored loss with spike flags (widget view)."""
    label = title or (f"{res.remedy}, seed {res.seed}: {int(res.spikes.sum())} flagged spikes, "
                      f"max monitored ratio {res.max_monitored_ratio:.1f}×, PR-AUC {res.metrics['pr_auc']:.3f}")
    fig = plot_batch_vs_monitored(res, label)
    return fig


def mechanism_table(positive_weight: float, p_anomaly: float, p_normal: float = 0.01,
                    steps_in_batch: int = 32 * 128):
    """The analytic mechanism as a Table (what the widget shows)."""
    from ..workbook.tables import Table
    m = imb.anomaly_loss_vs_normals(positive_weight, p_anomaly, p_normal, steps_in_batch)
    return Table(["quantity", "value"], [
        ["loss of the missed anomalous step, w·(−log p)", m["loss_of_miss"]],
        [f"loss of one normal step at p = {p_normal:g}", m["loss_of_normal_step"]],
        ["normal steps one miss outweighs (loss)", m["normals_outweighed_loss"]],
        ["normal steps one miss outweighs (logit gradient)", m["normals_outweighed_grad"]],
        [f"batch mean loss, {steps_in_batch:,} normal steps", m["batch_mean_loss_all_normal"]],
        ["batch mean loss with this one miss", m["batch_mean_loss_with_miss"]],
        ["jump factor of the batch loss", m["batch_ratio"]],
    ], title=f"w = {positive_weight:g}, anomalous step predicted at p = {p_anomaly:g}")


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure, which is then closed (widgets show cached images)."""
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def plot_pr_curve(curves: dict, finding: str, marks: dict | None = None):
    """Precision-recall curves {label: imb.precision_recall_curve(...)} on one axis, with
    optional marked operating points {label: (recall, precision)}. Returns the figure."""
    from ..workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=6.5, height=4)
    for label, c in curves.items():
        ax.step(c["recall"], c["precision"], where="post", label=label)
    for label, (r, p) in (marks or {}).items():
        ax.scatter([r], [p], s=50, zorder=4, label=label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall (anomalous steps found)")
    ax.set_ylabel("precision (alarms that are right)")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_fit_curves(rows: list[dict], fit_target: float, finding: str):
    """The validation PR-AUC of each committed asker-regime row against the optimizer step (its pr_auc_curve
    column), the fit target as a line and each seed's fit marked. Returns the figure."""
    from ..workbook.plotting import figure
    from .asker import pr_auc_curve
    fig, ax = figure(1, 1, finding=finding, width=8, height=4)
    for r in rows:
        curve = pr_auc_curve(r)
        line, = ax.plot(list(curve), list(curve.values()), lw=1.2, label=f"seed {r['seed']}")
        if r["fitted_step"] != "":
            ax.scatter([r["fitted_step"]], [curve[r["fitted_step"]]], color=line.get_color(), s=25, zorder=3)
    ax.axhline(fit_target, color="black", ls="--", lw=1, label=f"fit target {fit_target:g}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("optimizer step (batch 128)")
    ax.set_ylabel("validation PR-AUC")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    return fig
