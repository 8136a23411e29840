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

Also the plumbing lesson 08's page calls, kept off the page (none of it shares code with helpers.diagnose,
the tool the page tests): notebook_headings, average_precision, nested_layers, applied_statistics_gap,
plot_stored_against_exact.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from .workbook.frameworks import keras

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


def notebook_headings(notebook: str) -> set[str]:
    """The markdown headings ("## 2. Title" -> "2. Title") of notebooks/<notebook> in this workbook; an
    empty set when there is no such notebook (so a link to it names no section)."""
    from .workbook.findings import REPO_ROOT
    path = REPO_ROOT / "notebooks" / notebook
    if not path.is_file():
        return set()
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return {line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).splitlines() if line.startswith("#")}


def average_precision(y, score) -> float:
    """PR-AUC of binary labels y against scores (any equal shapes, e.g. (N, T) per-step labels): precision at
    each distinct score threshold, weighted by the recall gained there; tied scores form one threshold."""
    import numpy as np
    order = np.argsort(-score.ravel(), kind="stable")
    hits, ranked = y.ravel()[order].astype(np.float64), score.ravel()[order]
    last = np.r_[ranked[1:] != ranked[:-1], True]                      # the last step of each tied group
    tp, seen = np.cumsum(hits)[last], np.arange(1, len(hits) + 1)[last]
    return float(np.sum(tp / seen * np.diff(np.r_[0.0, tp])) / max(hits.sum(), 1.0))


def nested_layers(model):
    """Every layer of a Keras model, depth first, nested models' layers after the nested model itself."""
    for layer in getattr(model, "layers", []) or []:
        yield layer
        yield from nested_layers(layer)


def applied_statistics_gap(model, exact) -> float:
    """How far `model`'s BN layers are from applying the statistics of `exact` (the same architecture): per layer,
    the 90th percentile over channels of max(|ln divisor ratio|, |mean shift| in units of the exact divisor), with
    divisor sqrt(moving_variance + eps); the largest over layers (0.0 without BN layers)."""
    import numpy as np
    from .batchnorm import bn_layers
    worst = 0.0
    for la, lb in zip(bn_layers(model), bn_layers(exact)):
        da = np.sqrt(la.moving_variance.numpy() + la.epsilon)
        db = np.sqrt(lb.moving_variance.numpy() + lb.epsilon)
        shift = np.abs(la.moving_mean.numpy() - lb.moving_mean.numpy()) / db
        worst = max(worst, float(np.quantile(np.maximum(np.abs(np.log(da / db)), shift), 0.9)))
    return worst


def plot_stored_against_exact(layer: str, stored, exact, error_p90: float, off: bool):
    """Lesson 08's widget: one BN layer's stored moving variance + eps against the exact variance + eps of its
    input, one dot per channel (arrays of shape (channels,)), log-log, with the diagonal and the band where the
    divisor sqrt(var + eps) is within ±10 %. Returns (fig, ax)."""
    import numpy as np
    from .workbook.plotting import figure
    fig, ax = figure(finding=f"{layer}: error p90 {error_p90:.2f} — " + ("OFF" if off else "within 10 %"))
    ax.loglog(exact, stored, "o", ms=4, alpha=0.6)
    line = np.geomspace(min(exact.min(), stored.min()), max(exact.max(), stored.max()), 50)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * 0.9**2, line * 1.1**2, color="tab:green", alpha=0.15, label="divisor within ±10 %")
    ax.set_xlabel("exact variance of the layer's input + eps (x_train)")
    ax.set_ylabel("stored moving variance + eps")
    ax.legend()
    return fig, ax


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
