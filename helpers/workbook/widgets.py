"""Widgets over plain functions, and a way to measure how fast they respond.

Every interactive section wraps a plain function (callable without widgets):

    panel = interact_panel(plot_estimator, batch_size=IntSlider(2, 2, 64), order=Dropdown(...))
    latency = time_callbacks(panel, calls=20)   # drives the controls itself
    record("widget_estimator_median_s", latency["median_s"])

`interact_panel` displays the controls and the function's output; the
function should draw one figure (or return a Table) per call.
"""
from __future__ import annotations

import itertools
import time

import numpy as np


def interact_panel(fn, *, display_now: bool = True, **controls):
    """ipywidgets.interactive(fn, **controls), displayed; returns the panel.

    fn may draw a figure, display() something, or return a rich object (a
    Table, an Image): a returned rich object is displayed in the panel.

    panel.children[:-1] are the controls, panel.children[-1] the output area.
    """
    import functools

    import ipywidgets as widgets
    from IPython.display import display

    @functools.wraps(fn)  # keeps fn's signature, which interactive() reads
    def show(**kwargs):
        result = fn(**kwargs)
        # a returned Table, image or HTML object is shown; plain values (dicts of numbers) are not
        if any(hasattr(result, r) for r in ("_repr_html_", "_repr_png_", "_repr_svg_", "_repr_markdown_")):
            display(result)
        return result

    panel = widgets.interactive(show, **controls)
    panel.layout = widgets.Layout(border="1px solid #ddd", padding="6px")
    if display_now:
        display(panel)
    return panel


def _next_values(control):
    """An endless cycle of values that differ from the current one."""
    if hasattr(control, "options") and control.options:
        opts = list(control.options)
        values = [o[1] if isinstance(o, tuple) else o for o in opts]
    elif isinstance(control.value, bool):
        values = [not control.value, control.value]
    elif hasattr(control, "base"):  # FloatLogSlider: min/max are exponents of `base`
        values = [float(control.base ** e) for e in np.linspace(control.min, control.max, 12)]
    elif hasattr(control, "min") and hasattr(control, "max"):
        lo, hi = control.min, control.max
        step = getattr(control, "step", None) or (hi - lo) / 10
        n = int(round((hi - lo) / step)) + 1
        grid = np.linspace(lo, hi, min(n, 12))
        values = [type(control.value)(v) for v in grid]
    else:
        raise TypeError(f"don't know how to drive {type(control).__name__}")
    return itertools.cycle(values)


def time_callbacks(panel, calls: int = 20) -> dict:
    """Move the panel's controls `calls` times (round-robin) and time each update.

    Returns median_s and p95_s of the seconds from setting a value to the
    function's output being redrawn (ipywidgets runs the update synchronously).
    The controls are restored to their starting values afterwards.
    """
    import matplotlib.pyplot as plt
    controls = [c for c in panel.children if hasattr(c, "value") and c is not panel.out]
    if not controls:
        raise ValueError("panel has no controls to move")
    start_values = [c.value for c in controls]
    cycles = [_next_values(c) for c in controls]
    seconds = []
    for i in range(calls):
        k = i % len(controls)
        value = next(cycles[k])
        if value == controls[k].value:
            value = next(cycles[k])
        t0 = time.perf_counter()
        controls[k].value = value
        seconds.append(time.perf_counter() - t0)
    for c, v in zip(controls, start_values):
        c.value = v
    plt.close("all")
    return {"median_s": float(np.median(seconds)), "p95_s": float(np.percentile(seconds, 95)),
            "calls": calls}
