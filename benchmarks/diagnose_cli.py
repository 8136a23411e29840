"""Benchmark of `python -m helpers.diagnose` on a model of ~1M parameters and 10,000 examples.

    .venv/bin/python -m benchmarks.diagnose_cli      # prints one JSON line: seconds, peak_bytes, ...

measure() builds the model (a small CNN with three BatchNormalization layers whose Dense layer
holds most of the ~1.07M parameters) and random data in a temporary folder, runs the CLI as a
child process with every check, and returns its wall time and peak resident memory (the child's
own high-water mark, from wait4). Budgets: ≤ 60 s and ≤ 3 GiB (issue 16); `make bench` compares
them (benchmarks.budgets).
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


def build_files(folder: Path, seed: int = 0) -> tuple[Path, Path, int]:
    """Write bench.keras (~1.07M parameters) and bench.npz; return their paths and the parameter count."""
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


def measure(seed: int = 0) -> dict:
    """Build the files, run the CLI once; {"seconds", "peak_bytes", "parameters", "examples", "returncode"}."""
    with tempfile.TemporaryDirectory(prefix="diagnose-bench-") as tmp:
        folder = Path(tmp)
        model_path, data_path, params = build_files(folder, seed)
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
        stale = json.loads(report.read_text())["bn_statistics"]["stale"] if report.exists() else None
    return {"seconds": seconds, "peak_bytes": int(usage.ru_maxrss) * 1024, "parameters": params,
            "examples": N_EXAMPLES, "returncode": proc.returncode, "stale": stale,
            "stderr_tail": stderr.strip()[-300:] if proc.returncode else ""}


def main() -> int:
    result = measure()
    print(json.dumps(result))
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
