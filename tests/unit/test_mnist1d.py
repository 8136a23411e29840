"""Unit tests for helpers.mnist1d: the committed MNIST-1D arrays and their provenance."""
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import mnist1d

README = Path(mnist1d.DATA_DIR) / "README.md"


def _documented(label: str) -> str:
    text = README.read_text()
    m = re.search(rf"{re.escape(label)}\s*\|\s*`([0-9a-f]{{64}})`", text)
    assert m, f"data/README.md documents no {label}"
    return m.group(1)


def test_loader_shapes_labels_and_scale():
    d = mnist1d.load_mnist1d()
    assert d.x_train.shape == (4000, 40, 1) and d.x_test.shape == (1000, 40, 1)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert set(np.unique(d.y_train)) == set(range(10)) and set(np.unique(d.y_test)) == set(range(10))
    # the generator standardizes the whole set (train and test together) to mean 0, sd 1
    allx = np.concatenate([d.x_train, d.x_test]).ravel()
    assert abs(allx.mean()) < 1e-3 and abs(allx.std() - 1) < 1e-3
    # every class roughly a tenth of each split (the package draws 500 per class, then shuffles)
    assert np.bincount(d.y_train).min() >= 350 and np.bincount(d.y_test).min() >= 70


def test_committed_file_matches_the_documented_checksums():
    raw = mnist1d.MNIST1D_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == _documented("SHA-256 of mnist1d.npz")
    with np.load(mnist1d.MNIST1D_PATH) as f:
        arrays = {k: f[k] for k in f.files}
    assert mnist1d.array_digest(arrays) == _documented("SHA-256 of the arrays")


def test_array_digest_sees_a_changed_value():
    a = {"x": np.zeros((2, 3), np.float32), "y": np.arange(2, dtype=np.int32)}
    b = {"x": a["x"].copy(), "y": a["y"].copy()}
    b["x"][1, 2] = 1e-7
    assert mnist1d.array_digest(a) != mnist1d.array_digest(b)


def test_regenerating_with_the_pinned_package_gives_the_committed_arrays():
    import random
    from importlib.metadata import version
    pytest.importorskip("mnist1d")
    assert version("mnist1d") == mnist1d.MNIST1D_VERSION
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        arrays = mnist1d.generate()
    finally:  # the package's generator reseeds NumPy's and Python's global random state
        np.random.set_state(np_state)
        random.setstate(py_state)
    assert mnist1d.array_digest(arrays) == _documented("SHA-256 of the arrays")
