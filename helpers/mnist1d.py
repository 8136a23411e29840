"""MNIST-1D (Greydanus 2020, "Scaling Down Deep Learning"): lesson 02's second data set.

40-step 1-D signals of 10 classes, 4,000 train / 1,000 test, made by the `mnist1d`
package's own generator with its default arguments. The arrays are committed as
data/mnist1d.npz (provenance, version and SHA-256 in data/README.md), so nothing
is generated or downloaded at run time. Regenerate them with

    python -m helpers.mnist1d            # writes data/mnist1d.npz, prints its SHA-256

which calls `mnist1d.data.make_dataset(get_dataset_args())`, never the package's
download path (`get_dataset(..., download=True)` fetches a pickle from GitHub).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from .data import DATA_DIR, Digits

MNIST1D_PATH = DATA_DIR / "mnist1d.npz"
MNIST1D_VERSION = "0.0.2.post1"
SIGNAL_LENGTH = 40


def generate() -> dict[str, np.ndarray]:
    """The data set as the `mnist1d` package generates it offline (its default arguments, seed 42).

    Returns {"x_train" (4000, 40), "y_train" (4000,), "x_test" (1000, 40), "y_test" (1000,)}
    as float32 / int32. Needs the `mnist1d` package (and scipy). Note: the package's
    generator reseeds NumPy's and Python's global random state.
    """
    from mnist1d.data import get_dataset_args, make_dataset
    d = make_dataset(get_dataset_args())
    return {"x_train": np.asarray(d["x"], np.float32), "y_train": np.asarray(d["y"], np.int32),
            "x_test": np.asarray(d["x_test"], np.float32), "y_test": np.asarray(d["y_test"], np.int32)}


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (independent of zip metadata)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_mnist1d(path: Path = MNIST1D_PATH) -> str:
    """Generate the arrays, save them to `path` (numpy.savez_compressed); return their array digest."""
    arrays = generate()
    np.savez_compressed(path, **arrays)
    return array_digest(arrays)


def load_mnist1d(path: Path = MNIST1D_PATH) -> Digits:
    """MNIST-1D as the lesson uses it: x_* float32 (N, 40, 1) (one channel, as Conv1D expects),
    y_* int32 (N,); 4,000 train and 1,000 test signals, the package's own split."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    return Digits(arrays["x_train"][..., None], arrays["y_train"], arrays["x_test"][..., None], arrays["y_test"])


def _main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else MNIST1D_PATH
    digest = write_mnist1d(path)
    print(f"wrote {path}  arrays sha256 {digest}  file sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
