"""Predictions in either BN mode and the task's metric, with the noise of a paired comparison.

accuracy (classes) and mean squared error (regression) are means of per-example values, so the
standard error of a paired change is the sample sd of the per-example differences / sqrt(n).
PR-AUC (per-timestep labels) is not a mean: its standard errors come from resampling the series.
"""
from __future__ import annotations

import numpy as np

from .codes import BOOTSTRAP, MIN_IMPROVEMENT


def forward(model, x: np.ndarray, *, training: bool = False, batch_size: int = 512) -> np.ndarray:
    """Model outputs (float64) chunk by chunk through the workbook's cached tf.function (one trace per mode
    and input shape: helpers.training.compiled_call); BN statistics as they were afterwards, in either mode."""
    from ..training import predict_proba
    return predict_proba(model, np.asarray(x, np.float32), training=training, batch_size=batch_size,
                         compiled=True).astype(np.float64)


def probabilities_from(out: np.ndarray, from_logits: bool) -> np.ndarray:
    if not from_logits:
        return out
    if out.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-out))
    z = out - out.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def looks_like_logits(out: np.ndarray, task: str) -> bool:
    if task == "regression":
        return False
    if np.any(out < -1e-6) or np.any(out > 1 + 1e-6):
        return True
    if task == "classes" and out.shape[-1] > 1:
        return not np.allclose(out.sum(axis=-1), 1.0, atol=1e-3)
    return False


class Metric:
    """The task's metric. name, higher_is_better; value(out, y); paired(out_a, out_b, y) -> (change, se),
    change = value(b) − value(a) signed so that positive means better; chance(y_train, y) -> value of the best
    constant predictor, with the standard error of a model's value near it."""

    def __init__(self, task: str, from_logits: bool):
        self.task, self.from_logits = task, from_logits
        self.name = {"classes": "accuracy", "regression": "mean squared error", "timestep": "PR-AUC"}[task]
        self.short = {"classes": "accuracy", "regression": "MSE", "timestep": "PR-AUC"}[task]
        self.higher_is_better = task != "regression"

    def per_example(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.task == "classes":
            if out.shape[-1] == 1:
                p = probabilities_from(out, self.from_logits)[:, 0]
                return ((p > 0.5).astype(np.int64) == y).astype(np.float64)
            return (np.argmax(out, axis=-1) == y).astype(np.float64)
        if self.task == "regression":
            return np.mean((out.reshape(len(out), -1) - y) ** 2, axis=1)
        raise TypeError("PR-AUC is not a mean of per-example values")

    def value(self, out: np.ndarray, y: np.ndarray) -> float:
        if self.task == "timestep":
            from ..detection_metrics import pr_auc
            return float(pr_auc(y, probabilities_from(out, self.from_logits)[..., 0]))
        return float(np.mean(self.per_example(out, y)))

    def goodness(self, value: float) -> float:
        return value if self.higher_is_better else -value

    def paired(self, out_a: np.ndarray, out_b: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
        """(better-is-positive change from a to b, its standard error)."""
        if self.task != "timestep":
            d = self.per_example(out_b, y) - self.per_example(out_a, y)
            change = float(np.mean(d)) * (1 if self.higher_is_better else -1)
            se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
            return change, se
        rng = np.random.default_rng(seed)
        change = self.value(out_b, y) - self.value(out_a, y)
        diffs = []
        for _ in range(BOOTSTRAP):
            idx = rng.integers(0, len(y), len(y))
            if y[idx].sum() == 0:
                continue
            diffs.append(self.value(out_b[idx], y[idx]) - self.value(out_a[idx], y[idx]))
        return float(change), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("inf")

    def standard_error(self, out: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
        if self.task != "timestep":
            v = self.per_example(out, y)
            return float(np.std(v, ddof=1) / np.sqrt(len(v)))
        rng = np.random.default_rng(seed)
        vals = [self.value(out[idx], y[idx]) for idx in (rng.integers(0, len(y), len(y)) for _ in range(BOOTSTRAP))
                if y[idx].sum() > 0]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("inf")

    def chance(self, y_train: np.ndarray, y: np.ndarray) -> float:
        """The metric of the best constant predictor on y itself (an upper bound for any constant: the most
        frequent class of y, the mean of y, the positive rate)."""
        if self.task == "classes":
            return float(np.bincount(y.astype(np.int64)).max() / len(y))
        if self.task == "regression":
            return float(np.mean((y - y.mean(axis=0)) ** 2))
        return float(np.mean(y))      # PR-AUC of a constant score: the positive rate

    def perfect(self) -> float:
        return 0.0 if self.task == "regression" else 1.0

    def meaningful(self, change: float, reference: float) -> bool:
        """A change worth acting on: MIN_IMPROVEMENT (absolute) for accuracy and PR-AUC, that fraction of the
        reference value for a mean squared error."""
        return change >= (MIN_IMPROVEMENT * abs(reference) if self.task == "regression" else MIN_IMPROVEMENT)
