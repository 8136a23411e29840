"""Metrics for per-timestep detection that do not reward predicting all zeros (lessons 06–08).

    pr_auc(y, score)                      area under the precision–recall curve (average precision)
    recall_at_precision(y, score, p)      the best recall at precision >= p
    precision_recall_curve / best_f1_threshold / f1_at
    event_recall / false_alarms_per_series / false_alarms_per_1000_steps
                                          per event (a run of positive steps) and per series, with a
                                          tolerance of a few steps either side
    detection_report(y, score, ...)       all of them at one operating point

Plain NumPy. Shapes: labels y and scores (N, T) or (N, T, 1), or flat.
"""
from __future__ import annotations

import numpy as np

def _precision_recall_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Precision and recall at every distinct score threshold, from the highest
    score down (ties evaluated together); None if there is no positive."""
    y = np.asarray(y_true, np.float64).ravel() > 0.5
    s = np.asarray(score, np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # evaluate only at the last index of each group of tied scores
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    tp, fp = tp[last], fp[last]
    return tp / (tp + fp), tp / n_pos


def pr_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision, step-wise) over
    all timesteps. y_true, score: any equal shapes (flattened). 0 if no positive.

    The all-zeros (or constant) predictor scores the positive rate, ~0.002 here.
    """
    curve = _precision_recall_curve(y_true, score)
    if curve is None:
        return 0.0
    precision, recall = curve
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def recall_at_precision(y_true: np.ndarray, score: np.ndarray, precision: float = 0.5) -> float:
    """Best recall over thresholds whose precision is ≥ `precision` (0 if none)."""
    curve = _precision_recall_curve(y_true, score)
    if curve is None:
        return 0.0
    prec, rec = curve
    ok = prec >= precision
    return float(rec[ok].max()) if ok.any() else 0.0


def precision_recall_curve(y_true: np.ndarray, score: np.ndarray) -> dict:
    """The precision-recall curve with its thresholds: predicting "anomalous" where
    score > thresholds[k] gives precision[k], recall[k] (thresholds lie halfway
    between distinct scores, so `>` and `≥` agree). Empty arrays if no positive."""
    curve = _precision_recall_curve(y_true, score)
    if curve is None:
        return {"precision": np.zeros(0), "recall": np.zeros(0), "thresholds": np.zeros(0)}
    s = np.sort(np.unique(np.asarray(score, np.float64).ravel()))[::-1]   # distinct scores, high → low
    lower = np.r_[s[1:], s[-1] - 1.0]
    return {"precision": curve[0], "recall": curve[1], "thresholds": (s + lower) / 2}


def best_f1_threshold(y_true: np.ndarray, score: np.ndarray) -> dict:
    """The threshold with the highest F1 = 2PR/(P+R) on (y_true, score), e.g. validation
    data. Returns threshold, f1, precision, recall (threshold 0.5 and zeros if no positive)."""
    c = precision_recall_curve(y_true, score)
    if not len(c["thresholds"]):
        return {"threshold": 0.5, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    p, r = c["precision"], c["recall"]
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    k = int(np.argmax(f1))
    return {"threshold": float(c["thresholds"][k]), "f1": float(f1[k]), "precision": float(p[k]),
            "recall": float(r[k])}


def f1_at(y_true: np.ndarray, score: np.ndarray, threshold: float) -> float:
    """Step-level F1 of predicting "anomalous" where score > threshold."""
    y = np.asarray(y_true).ravel() > 0.5
    fired = np.asarray(score).ravel() > threshold
    tp = int((fired & y).sum())
    return 0.0 if tp == 0 else float(2 * tp / (fired.sum() + y.sum()))


def _per_step(a: np.ndarray) -> np.ndarray:
    """(N, T) or (N, T, 1) -> (N, T)."""
    a = np.asarray(a)
    return a[..., 0] if a.ndim == 3 else a


def widen_events(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """A boolean (N, T) mask that is also True within ±tolerance steps of every True step."""
    if tolerance <= 0:
        return mask
    padded = np.pad(mask, ((0, 0), (tolerance, tolerance)))
    wide = np.zeros_like(mask)
    for k in range(2 * tolerance + 1):
        wide |= padded[:, k:k + mask.shape[1]]
    return wide


def event_recall(y_true: np.ndarray, score: np.ndarray, *, threshold: float = 0.5,
                 tolerance: int = 2) -> float:
    """Fraction of anomalous *series-events* found: a series with labels counts
    as found if the score exceeds `threshold` at any step within ±`tolerance`
    steps of a labelled step. y_true, score: (N, T) (or (N, T, 1)).
    """
    y, s = _per_step(y_true), _per_step(score)
    fired = widen_events(s > threshold, tolerance)
    events = y.max(axis=1) > 0.5
    if not events.any():
        return 0.0
    found = (fired & (y > 0.5)).any(axis=1)
    return float(found[events].mean())


def false_alarms_per_series(y_true: np.ndarray, score: np.ndarray, *, threshold: float = 0.5,
                            tolerance: int = 2) -> float:
    """Mean number of steps per series where the model fires (> threshold) farther
    than `tolerance` steps from any labelled step."""
    y, s = _per_step(y_true), _per_step(score)
    near = widen_events(y > 0.5, tolerance)
    return float(((s > threshold) & ~near).sum() / y.shape[0])


def false_alarms_per_1000_steps(y_true: np.ndarray, score: np.ndarray, *, threshold: float = 0.5,
                                tolerance: int = 2) -> float:
    """Steps where the model fires (> threshold) farther than `tolerance` steps from any
    labelled step, per 1,000 steps scored (the rate an operator would see)."""
    y = _per_step(y_true)
    return 1000.0 * false_alarms_per_series(y_true, score, threshold=threshold, tolerance=tolerance) / y.shape[1]


def detection_report(y_true: np.ndarray, score: np.ndarray, *, precision: float = 0.5,
                     tolerance: int = 2) -> dict:
    """PR-AUC, recall at fixed precision, event recall, false alarms/series and
    accuracy at 0.5 — accuracy is included only to show how little it says."""
    y = np.asarray(y_true)
    s = np.asarray(score)
    if s.ndim == 3:
        s = s[..., 0]
    return {
        "pr_auc": pr_auc(y, s),
        f"recall_at_p{precision:g}": recall_at_precision(y, s, precision),
        "event_recall": event_recall(y, s, tolerance=tolerance),
        "false_alarms_per_series": false_alarms_per_series(y, s, tolerance=tolerance),
        "accuracy": float(np.mean((s > 0.5) == (y > 0.5))),
    }
