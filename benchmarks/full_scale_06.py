"""Lesson 06's model at the asker's full size: a few training steps, timed.

    .venv/bin/python -m benchmarks.full_scale_06 [--steps 3]   # prints one JSON line

The asker trains 7,000 series of 4,096 steps with a 2-layer LSTM(64) at batch 128. Lesson 06 trains
a smaller tagger and does not extrapolate from it (an LSTM's steps run one after another, so its
cost is not proportional to anything the small runs measure). This script runs the lesson's own
training loop (helpers.spikes.TaggerTrainer, plain graph: on a CPU its step hardly grows with the
batch, an XLA step grows in proportion) at the full size on one batch of 128 synthetic series of
4,096 steps, with per-step weights neg/pos: one step that traces the graph, then `--steps` timed
steps. It reports the median step, the 54 steps of one epoch of 7,000 series at that median (the
loop drops the last partial batch), and
the process's peak resident memory. `make bench` shows them without a budget.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

SERIES, TIMESTEPS, UNITS, BATCH = 7000, 4096, 64, 128


def measure(steps: int = 3, seed: int = 0) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    from helpers import imbalanced as imb
    from helpers.spikes.training import TaggerTrainer
    data = imb.make_series(BATCH, TIMESTEPS, frac_series_with_anomaly=0.2, anomalies_per_series=2,
                           amplitude=2.0, seed=seed)
    x, y = data.x, data.y
    w = imb.timestep_weights(y, imb.positive_weight_for(y))
    trainer = TaggerTrainer(UNITS, jit_compile=False)
    trainer.reset(seed, 1e-3)
    batch = [(x.astype(np.float32), y.astype(np.float32), w.astype(np.float32))]
    t0 = time.perf_counter()
    trainer.steps(batch)                      # traces the graph
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.steps(batch)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    per_epoch = SERIES // BATCH
    return {"first_step_s": first, "step_median_s": median, "steps_timed": steps, "step_times_s": times,
            "steps_per_epoch": per_epoch, "epoch_s": per_epoch * median, "positives_in_batch": int(y.sum()),
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "shape": f"{SERIES:,} x {TIMESTEPS:,}, 2 x LSTM({UNITS}), batch {BATCH}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.full_scale_06", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (1-20, default 3)")
    args = parser.parse_args(argv)
    if not 1 <= args.steps <= 20:
        parser.error(f"--steps {args.steps}: expected 1-20")
    print(json.dumps(measure(args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
