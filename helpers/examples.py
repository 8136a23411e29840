"""Lesson 08's default example, the one `python -m helpers.diagnose` reads with no model of your own.

    .venv/bin/python -m helpers.examples [--epochs 3] [--out DIR]      (a step of `make data`)

Writes into data/examples/ (or DIR):
  stale_bn.keras  the digits CNN of lesson 04 (example_cnn(): helpers.models.small_cnn, BN momentum 0.99),
                  trained for only EPOCHS epochs at batch BATCH_SIZE (135 steps at the defaults): its
                  weights have learnt, its BN moving statistics have not caught up (the known problem).
  digits.npz      x_train, y_train, x_test, y_test: the digits split of helpers.data.load_digits,
                  float32 (N, 8, 8, 1) in [0, 1] and int32 (N,) labels.
  examples.provenance.json   the command, versions, dates and machine (helpers.workbook.committed.provenance),
                  the settings, and each file's size and SHA-256 ("files").

The arrays of digits.npz are exactly load_digits()'s; the trained weights are not bit-identical across
CPUs, so tests/unit/test_examples.py checks the committed files against the provenance's hashes and the
model's architecture against example_cnn(), not a regenerated model's bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

SEED = 0
EPOCHS = 3
BATCH_SIZE = 32
MOMENTUM = 0.99
MODEL_FILE, DATA_FILE = "stale_bn.keras", "digits.npz"
PROVENANCE_FILE = "examples.provenance.json"
COMMAND = "python -m helpers.examples"
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def example_cnn():
    """The example's model, untrained and compiled (Adam 1e-3, sparse categorical cross-entropy)."""
    from .models import compile_classifier, small_cnn
    return compile_classifier(small_cnn("batch", momentum=MOMENTUM, name="stale_bn"))


def file_record(path: str | Path) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file."""
    data = Path(path).read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def examples_dir() -> Path:
    """data/examples of the workbook's data folder (helpers.workbook.committed.find_data_dir)."""
    from .workbook.committed import find_data_dir
    return find_data_dir() / "examples"


def make(out: str | Path | None = None, *, epochs: int = EPOCHS, command: str = COMMAND) -> dict:
    """Train the example, write its two files and examples.provenance.json into `out` (default
    data/examples); returns the provenance."""
    import keras
    import numpy as np
    from .data import load_digits
    from .workbook.committed import provenance, utc_now
    out = Path(out) if out is not None else examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    started = utc_now()
    digits = load_digits()
    keras.utils.set_random_seed(SEED)
    model = example_cnn()
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, shuffle=True)
    model.save(out / MODEL_FILE)
    np.savez_compressed(out / DATA_FILE, **{k: getattr(digits, k) for k in ARRAYS})
    info = provenance(command, started=started, finished=utc_now(), rows=len(digits.x_train) + len(digits.x_test),
                      seed=SEED, epochs=epochs, batch_size=BATCH_SIZE, momentum=MOMENTUM,
                      steps=int(model.optimizer.iterations.numpy()), parameters=model.count_params(),
                      train_images=len(digits.x_train), test_images=len(digits.x_test),
                      files={name: file_record(out / name) for name in (MODEL_FILE, DATA_FILE)})
    (out / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m helpers.examples", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default data/examples)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs}: expected an integer ≥ 1")
    info = make(args.out, epochs=args.epochs, command=" ".join([COMMAND, *argv]))
    print(f"TensorFlow {info['tensorflow']} · Keras {info['keras']} · NumPy {info['numpy']} · {info['cpu_model']}")
    for name, rec in info["files"].items():
        print(f"{name}: {rec['bytes']} bytes, sha256 {rec['sha256']}")
    print(f"{info['parameters']} parameters, {info['steps']} steps; "
          f"{info['train_images']} training and {info['test_images']} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
