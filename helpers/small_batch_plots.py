"""Lesson 02's figures and widget: the estimator's bias and spread, the sweep's accuracies, and the
estimator panel (a live Monte Carlo histogram drawn as SVG plus the sweep rows it matches).

Plain functions over the numbers helpers.small_batches measures. Importing this module loads TensorFlow
(through helpers.small_batches) and does nothing else.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .small_batches import NORM_LABELS, ORDER_LABELS, RunResult, estimator_trials, sweep_table
from .workbook.tables import Table

# ------------------------------------------------------------------- plots


def plot_variance_ratio(iid: Table, grouped: Table | None = None, finding: str | None = None):
    """Measured E[biased var]/var (± 5 standard errors) and the m/(m-1) corrected ratio against m."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    m = np.array(iid.column("batch size m"), float)
    grid = np.geomspace(m.min(), m.max(), 200)
    ax.plot(grid, (grid - 1) / grid, color="0.5", lw=1.2, label="theory (m−1)/m")
    ax.axhline(1.0, color="0.5", ls=":", lw=1.2, label="unbiased: 1")
    ax.errorbar(m, iid.column("E[biased var]/var"), yerr=5 * np.array(iid.column("std error")), fmt="o",
                color="C0", capsize=3, label="measured, biased (÷m), ±5 SE")
    ax.errorbar(m, iid.column("E[corrected var]/var"), yerr=5 * np.array(iid.column("corrected std error")),
                fmt="s", color="C1", capsize=3, label="measured, × m/(m−1)")
    if grouped is not None:
        ax.plot(m, grouped.column("E[biased var]/var"), "^--", color="C3", label="same-class batches, biased")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size m (samples, log scale)")
    ax.set_ylabel("E[batch variance] / true variance")
    ax.legend(loc="lower right")
    return fig


def plot_estimator_spread(iid: Table, finding: str | None = None):
    """Relative standard deviation of the batch mean and batch variance against m (log-log)."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.0, height=4.0)
    m = np.array(iid.column("batch size m"), float)
    ax.plot(m, iid.column("sd of batch mean / sd"), "o-", label="batch mean: sd / population sd")
    ax.plot(m, iid.column("sd of batch var / its mean"), "s-", label="batch variance: sd / its mean")
    ax.plot(m, 1 / np.sqrt(m), color="0.5", ls=":", label="1/√m")
    ax.plot(m, np.sqrt(2 / (m - 1)), color="0.5", ls="--", label="√(2/(m−1)) (normal data)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size m (samples, log scale)")
    ax.set_ylabel("relative spread (log scale)")
    ax.legend()
    return fig


def plot_sweep(results: Sequence[RunResult], batch_sizes: Sequence[int], finding: str | None = None):
    """Test accuracy vs batch size per normalization, i.i.d. batches (BN as trained and after precise BN)."""
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    by = {r.key: r for r in results}
    for i, norm in enumerate(("batch", "group", "layer", "none")):
        acc = [by[(norm, "iid", b)].acc for b in batch_sizes if (norm, "iid", b) in by]
        bs = [b for b in batch_sizes if (norm, "iid", b) in by]
        ax.plot(bs, acc, "o-", color=f"C{i}", label=NORM_LABELS[norm] + (" (as trained)" if norm == "batch" else ""))
    bs = [b for b in batch_sizes if ("batch", "iid", b) in by]
    ax.plot(bs, [by[("batch", "iid", b)].acc_precise for b in bs], "o--", color="C0", alpha=0.6,
            label="BatchNorm after precise BN")
    _accuracy_axes(ax, batch_sizes, "batch size (samples per step, i.i.d.)", legend="lower right")
    return fig


def plot_orders(results: dict, batch_sizes: Sequence[int], finding: str | None = None):
    """BN vs GN test accuracy against batch size for i.i.d. and same-class batches. results: Sweep.results.

    BN is plotted after precise BN, so the curves compare what the weights learned,
    not how far the moving averages had converged.
    """
    from .workbook.plotting import figure
    fig, ax = figure(finding=finding, width=7.5, height=4.2)
    for norm, color in (("batch", "C0"), ("group", "C1")):
        for order, style in (("iid", "o-"), ("grouped", "s--")):
            bs = [b for b in batch_sizes if (norm, order, b) in results]
            acc = [results[(norm, order, b)].acc_precise if norm == "batch" else results[(norm, order, b)].acc
                   for b in bs]
            label = NORM_LABELS[norm] + (" (precise BN)" if norm == "batch" else "")
            ax.plot(bs, acc, style, color=color, label=f"{label}, {ORDER_LABELS[order]}")
    _accuracy_axes(ax, batch_sizes, "batch size (samples per step)", legend="center right")
    return fig


def _accuracy_axes(ax, batch_sizes: Sequence[int], xlabel: str, *, legend: str) -> None:
    """Test accuracy (0–1) against batch size on a log2 axis ticked at the sweep's batch sizes."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes), [str(b) for b in batch_sizes])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (inference mode)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc=legend)


# ------------------------------------------------------------------ widget


def svg_histogram(values: np.ndarray, *, bins: int, value_range: tuple[float, float], title: str, xlabel: str,
                  ylabel: str, markers: Sequence[tuple[float, str, str]] = (), color: str = "#1f77b4",
                  width: int = 640, height: int = 250) -> str:
    """A histogram of values (N,) as an SVG string: bars, axes with ticks and labels, a title,
    and vertical markers [(x, colour, legend text)].

    Drawn by hand because the widget must redraw in well under 0.3 s even on a busy
    machine; rendering a matplotlib figure to PNG takes 0.1–1 s there.
    """
    import html
    lo, hi = value_range
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    left, right, top, bottom = 60, 16, 34, 44
    pw, ph = width - left - right, height - top - bottom
    ymax = max(int(counts.max()), 1)
    sx = lambda v: left + (v - lo) / (hi - lo) * pw  # noqa: E731
    sy = lambda c: top + ph - c / ymax * ph  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold" font-size="12">'
           f'{html.escape(title)}</text>']
    for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
        if c:
            out.append(f'<rect x="{sx(e0):.1f}" y="{sy(c):.1f}" width="{sx(e1) - sx(e0):.1f}" '
                       f'height="{top + ph - sy(c):.1f}" fill="{color}" fill-opacity="0.75"/>')
    out.append(f'<path d="M{left},{top} V{top + ph} H{left + pw}" stroke="black" fill="none"/>')
    for t in np.linspace(lo, hi, 5):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="black"/>'
                   f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:g}</text>')
    for c in np.linspace(0, ymax, 3):
        out.append(f'<text x="{left - 6}" y="{sy(c) + 4:.1f}" text-anchor="end">{int(c):,}</text>')
    for i, (x, col, label) in enumerate(markers):
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="{col}" '
                   f'stroke-width="2" stroke-dasharray="{"none" if i == 0 else "5,3"}"/>'
                   f'<text x="{left + pw - 4}" y="{top + 14 + 14 * i}" text-anchor="end" fill="{col}">'
                   f'{html.escape(label)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>'
               f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text></svg>')
    return "".join(out)


def estimator_panel(values: np.ndarray, labels: np.ndarray, results: Sequence[RunResult], batch_size: int,
                    order: str, trials: int = 20_000, seed: int = 0) -> Table:
    """Widget function: histogram of the batch variance at this batch size and order (live Monte
    Carlo, `trials` draws), plus the sweep table with the matching rows highlighted.

    values, labels: (N,). Displays the histogram (SVG) and returns the Table.
    """
    from IPython.display import SVG, display
    rng = np.random.default_rng(seed)
    true_var = np.asarray(values, np.float64).var()
    _, variances = estimator_trials(values, labels, batch_size, trials, rng, order)
    ratio = variances / true_var
    m = batch_size
    display(SVG(svg_histogram(
        ratio, bins=60, value_range=(0.0, 4.0),
        title=f"{ORDER_LABELS[order]} batches of {m}: E[batch var] = {ratio.mean():.2f} × true "
              f"(i.i.d. theory {(m - 1) / m:.2f})",
        xlabel="batch variance / true variance (clipped at 4)", ylabel=f"batches (of {trials:,})",
        markers=[(ratio.mean(), "black", f"measured mean {ratio.mean():.3f}"),
                 ((m - 1) / m, "#777777", f"(m−1)/m = {(m - 1) / m:.3f}"),
                 (1.0, "#bbbbbb", "true variance = 1")],
        color="#1f77b4" if order == "iid" else "#d62728")))
    table = sweep_table(results, highlight=(order, m), title=f"Sweep rows for {ORDER_LABELS[order]} batches of {m}"
                        + ("" if any((r.order, r.batch_size) == (order, m) for r in results)
                           else " (not in the sweep)"))
    return table  # ipywidgets.interactive displays the returned table under the histogram
