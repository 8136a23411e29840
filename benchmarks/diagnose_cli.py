"""Benchmarks of `python -m helpers.diagnose` (every check) on two models.

    .venv/bin/python -m benchmarks.diagnose_cli [--case cnn|mobilenet]   # one JSON line: seconds, peak_bytes, ...

cnn: a small CNN with three BatchNormalization layers whose Dense layer holds most of its ~1.07M
parameters, 10,000 random 16×16×3 examples (budget ≤ 60 s, ≤ 3 GiB).
mobilenet: keras.applications.MobileNetV2 at alpha 0.35 on 32×32×3 inputs (52 BN layers; untrained, so
its statistics are far from exact and the recomputation needs its most passes), 3,200 training and 800
held-out random images (budget ≤ 30 s, ≤ 3 GiB).
measure() builds the files in a temporary folder, runs the CLI as a child process and returns its wall
time and peak resident memory (the child's own high-water mark, from wait4); `make bench` compares them
with benchmarks.budgets.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N_EXAMPLES = 10_000
N_TEST = 2_000
INPUT_SHAPE = (16, 16, 3)
CLASSES = 10


MOBILENET_TRAIN, MOBILENET_TEST, MOBILENET_SHAPE = 3_200, 800, (32, 32, 3)
CASES = ("cnn", "mobilenet")


def build_mobilenet(folder: Path, seed: int = 0) -> tuple[Path, Path, int]:
    """Write mobilenet.keras (MobileNetV2, alpha 0.35, 32×32×3, 10 classes) and mobilenet.npz."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import keras
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=MOBILENET_SHAPE, weights=None, classes=CLASSES)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    n = MOBILENET_TRAIN + MOBILENET_TEST
    x = rng.uniform(size=(n,) + MOBILENET_SHAPE).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n).astype(np.int32)
    model_path, data_path = folder / "mobilenet.keras", folder / "mobilenet.npz"
    model.save(model_path)
    np.savez(data_path, x_train=x[:MOBILENET_TRAIN], y_train=y[:MOBILENET_TRAIN], x_test=x[MOBILENET_TRAIN:],
             y_test=y[MOBILENET_TRAIN:])
    return model_path, data_path, int(model.count_params())


def build_files(folder: Path, seed: int = 0, case: str = "cnn") -> tuple[Path, Path, int]:
    """Write the case's model and .npz; return their paths and the parameter count."""
    if case == "mobilenet":
        return build_mobilenet(folder, seed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import keras
    from keras import layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    h = inputs
    for filters in (32, 64):
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(256, use_bias=False)(h)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    model = keras.Model(inputs, layers.Dense(CLASSES, activation="softmax")(h), name="bench")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_EXAMPLES + N_TEST,) + INPUT_SHAPE).astype(np.float32)
    y = rng.integers(0, CLASSES, size=N_EXAMPLES + N_TEST).astype(np.int32)
    model_path, data_path = folder / "bench.keras", folder / "bench.npz"
    model.save(model_path)
    np.savez(data_path, x_train=x[:N_EXAMPLES], y_train=y[:N_EXAMPLES], x_test=x[N_EXAMPLES:], y_test=y[N_EXAMPLES:])
    return model_path, data_path, int(model.count_params())


def measure(seed: int = 0, case: str = "cnn") -> dict:
    """Build the files, run the CLI once; {"case", "seconds", "peak_bytes", "parameters", "examples", "bn_layers",
    "returncode", "codes"}."""
    with tempfile.TemporaryDirectory(prefix="diagnose-bench-") as tmp:
        folder = Path(tmp)
        model_path, data_path, params = build_files(folder, seed, case)
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "helpers.diagnose", str(model_path), str(data_path),
               "--out", str(folder / "report"), "--quiet"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()
        report = folder / "report" / "report.json"
        written = json.loads(report.read_text()) if report.exists() else None
    return {"case": case, "seconds": seconds, "peak_bytes": int(usage.ru_maxrss) * 1024, "parameters": params,
            "examples": MOBILENET_TRAIN if case == "mobilenet" else N_EXAMPLES,
            "bn_layers": written["model"]["bn_layers"] if written else None,
            "codes": [f["code"] for f in written["findings"]] if written else None, "returncode": proc.returncode,
            "stderr_tail": stderr.strip()[-300:] if proc.returncode else ""}


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose_cli", description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=CASES, default="cnn")
    result = measure(case=parser.parse_args(argv).case)
    print(json.dumps(result))
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
