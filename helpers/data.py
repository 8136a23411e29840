"""The digits data set and the batch orders later lessons need.

data/digits.npz holds the 1,797 8x8 handwritten digits that scikit-learn ships
(provenance in data/README.md). Nothing is downloaded at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .workbook.frameworks import tf  # first: sets TensorFlow's environment
from .workbook.committed import find_data_dir

SPLIT_SEED = 20240607  # fixed: every lesson and seed sees the same train/test split
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Digits:
    """x_*: float32 (N, 8, 8, 1) in [0, 1]; y_*: int32 (N,) class labels 0..9."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return 10

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(x_train, x_test) flattened to (N, 64)."""
        return self.x_train.reshape(len(self.x_train), -1), self.x_test.reshape(len(self.x_test), -1)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(path: Path | None = None) -> Digits:
    """The digits with a fixed stratified 80/20 split: 1,438 train, 359 test (per class, round(0.2 · n_c) go to test).
    `path` defaults to DIGITS_PATH."""
    with np.load(path or find_data_dir() / "digits.npz") as f:
        images, labels = f["images"], f["labels"]
    x = (images.astype(np.float32) / 16.0)[..., None]
    y = labels.astype(np.int32)
    tr, te = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return Digits(x[tr], y[tr], x[te], y[te])


def iid_batches(n: int, batch_size: int, rng: np.random.Generator,
                drop_remainder: bool = False) -> list[np.ndarray]:
    """One epoch of shuffled index batches; the last may be smaller unless dropped."""
    order = rng.permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_remainder and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def grouped_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator,
                    drop_remainder: bool = False) -> list[np.ndarray]:
    """One epoch of *correlated* batches: every batch holds samples of one class.

    This is what sequential, per-user or per-recording data does to a batch.
    Batches are cut within each shuffled class, then the batch order is shuffled.
    """
    batches = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for i in range(0, len(idx), batch_size):
            b = idx[i:i + batch_size]
            if drop_remainder and len(b) < batch_size:
                continue
            batches.append(b)
    return [batches[i] for i in rng.permutation(len(batches))]




def epoch_batches(labels: np.ndarray, batch_size: int, order: str, rng: np.random.Generator,
                  drop_remainder: bool = False) -> list[np.ndarray]:
    """One epoch of index batches in the given order: "iid" or "grouped" (by class)."""
    if order == "iid":
        return iid_batches(len(labels), batch_size, rng, drop_remainder)
    if order == "grouped":
        return grouped_batches(labels, batch_size, rng, drop_remainder)
    raise ValueError(f"order must be 'iid' or 'grouped', got {order!r}")


def batch_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, order: str, epochs: int,
                  seed: int, drop_remainder: bool = False):
    """A tf.data.Dataset yielding `epochs` epochs of (x, y) batches in `order`.

    Returns (dataset, steps_per_epoch); pass both to model.fit with the same epochs.
    A fresh shuffle is drawn for every epoch from `seed`. With "grouped", epochs can
    differ by a batch or so; steps_per_epoch is the smallest over epochs.
    """
    rng = np.random.default_rng(seed)
    epochs_batches = [epoch_batches(y, batch_size, order, rng, drop_remainder) for _ in range(epochs)]
    steps = min(len(b) for b in epochs_batches)
    flat = [b for eb in epochs_batches for b in eb[:steps]]

    def gen():
        for b in flat:
            yield x[b], y[b]

    sig = (tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype)),
           tf.TensorSpec((None,) + y.shape[1:], tf.as_dtype(y.dtype)))
    return tf.data.Dataset.from_generator(gen, output_signature=sig), steps


def __getattr__(name: str):
    # DATA_DIR (the workbook's data/) and DIGITS_PATH are found when used (helpers.workbook.committed.find_data_dir)
    if name == "DATA_DIR":
        return find_data_dir()
    if name == "DIGITS_PATH":
        return find_data_dir() / "digits.npz"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
