"""Spike flags: the running median of the previous points is the one reference.

    running_median(values, window)      ref[k] = median(values[k-window:k]), NaN for k < 3
    running_median_ratio(values, ...)   values[k] / ref[k]
    jumps_above_median(values, ...)     values[k] - ref[k]
    flag_spikes(values, ...)            ratio ≥ `ratio` AND jump ≥ `min_jump`

The lesson shows its own flagging rule on the page; these functions are the
same rule for the sweeps, unit-tested against it.
"""
from __future__ import annotations

import numpy as np

MIN_POINTS = 3  # fewer previous points than this give no reference


def running_median(values: np.ndarray, window: int = 10) -> np.ndarray:
    """ref[k] = median(values[max(0, k-window):k]) for k ≥ 3; NaN before (too few points)."""
    v = np.asarray(values, np.float64)
    ref = np.full(v.shape, np.nan)
    for k in range(MIN_POINTS, min(window, len(v))):          # the first, shorter windows
        ref[k] = np.median(v[:k])
    if len(v) > window:                                        # then every full window at once
        ref[window:] = np.median(np.lib.stride_tricks.sliding_window_view(v[:-1], window), axis=1)
    ref[:MIN_POINTS] = np.nan
    return ref


def running_median_ratio(values: np.ndarray, window: int = 10) -> np.ndarray:
    """ratio[k] = values[k] / running_median(values)[k]; NaN where the reference is missing or ≤ 0."""
    v = np.asarray(values, np.float64)
    ref = running_median(v, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref > 0, v / np.where(ref > 0, ref, 1.0), np.nan)


def jumps_above_median(values: np.ndarray, window: int = 10) -> np.ndarray:
    """values[k] − running_median(values)[k] for k ≥ 3 (length len(values) − 3; empty if shorter)."""
    v = np.asarray(values, np.float64)
    return (v - running_median(v, window))[MIN_POINTS:]


def flag_spikes(values: np.ndarray, *, window: int = 10, ratio: float = 3.0,
                min_jump: float = 0.02) -> np.ndarray:
    """Boolean mask (len(values),): True where values[k] is ≥ `ratio` times the median
    of the previous `window` points AND exceeds that median by ≥ `min_jump`
    (in loss units). Both: a ratio alone flags tiny wiggles once the loss is
    near 0; a jump alone flags the normal fast descent at the start."""
    v = np.asarray(values, np.float64)
    ref = running_median(v, window)
    r = running_median_ratio(v, window)
    with np.errstate(invalid="ignore"):
        return np.isfinite(r) & (r >= ratio) & (v - ref >= min_jump)
