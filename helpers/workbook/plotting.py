"""One plot style for the workbook: consistent sizes, titles that state findings."""
from __future__ import annotations

STYLE = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "savefig.bbox": "tight",
}

PANEL_WIDTH = 4.2
PANEL_HEIGHT = 3.4


def use_style() -> None:
    """Apply the workbook's matplotlib style (idempotent)."""
    import matplotlib as mpl
    mpl.rcParams.update(STYLE)


def figure(ncols: int = 1, nrows: int = 1, *, finding: str | None = None, width: float | None = None,
           height: float | None = None, **kwargs):
    """A figure with ncols x nrows panels; `finding` becomes the figure's title.

    Returns (fig, axes) with axes squeezed like plt.subplots.
    """
    import matplotlib.pyplot as plt
    use_style()
    size = (width or PANEL_WIDTH * ncols + 0.6, height or PANEL_HEIGHT * nrows + (0.5 if finding else 0))
    fig, axes = plt.subplots(nrows, ncols, figsize=size, **kwargs)
    if finding:
        fig.suptitle(finding, fontsize=12, fontweight="bold")
    fig.set_layout_engine("constrained")
    return fig, axes


def finding_title(target, text: str) -> None:
    """State the finding as the title of an Axes or a Figure."""
    if hasattr(target, "suptitle"):
        target.suptitle(text, fontsize=12, fontweight="bold")
    else:
        target.set_title(text)
