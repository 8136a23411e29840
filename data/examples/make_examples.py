"""Regenerate the default example of lesson 07 and of `python -m helpers.diagnose`.

    .venv/bin/python data/examples/make_examples.py

Writes, next to this script:
  stale_bn.keras  the digits CNN of lesson 04 (helpers.models.small_cnn, BN momentum 0.99),
                  trained for only 3 epochs at batch 32 (135 steps): its weights have learnt,
                  its BN moving statistics have not caught up (the known problem).
  digits.npz      x_train, y_train, x_test, y_test: the digits split of helpers.data.load_digits,
                  float32 (N, 8, 8, 1) in [0, 1] and int32 (N,) labels.
Provenance (sizes, SHA-256, versions) goes in data/README.md, section "examples".
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

SEED = 0
EPOCHS = 3
BATCH_SIZE = 32
MOMENTUM = 0.99


def main() -> int:
    import numpy as np
    import keras
    import tensorflow as tf
    from helpers.data import load_digits
    from helpers.models import compile_classifier, small_cnn

    digits = load_digits()
    keras.utils.set_random_seed(SEED)
    model = compile_classifier(small_cnn("batch", momentum=MOMENTUM, name="stale_bn"))
    model.fit(digits.x_train, digits.y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0, shuffle=True)
    model.save(HERE / "stale_bn.keras")
    np.savez_compressed(HERE / "digits.npz", x_train=digits.x_train, y_train=digits.y_train,
                        x_test=digits.x_test, y_test=digits.y_test)
    print(f"TensorFlow {tf.__version__} · Keras {keras.__version__} · NumPy {np.__version__}")
    for name in ("stale_bn.keras", "digits.npz"):
        path = HERE / name
        print(f"{name}: {path.stat().st_size} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    print(f"{model.count_params()} parameters; {len(digits.x_train)} training and {len(digits.x_test)} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
