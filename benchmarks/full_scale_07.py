"""Lesson 07's model at the asker's full size: a few training steps, timed.

    .venv/bin/python -m benchmarks.full_scale_07 [--steps 3]   # prints one JSON line

The asker trains 7,000 series of 4,096 steps with a 2-layer LSTM(64) at batch 128. Lesson 07 trains
2 × LSTM(16) on 256-step series and does not extrapolate from it (an LSTM's steps run one after another,
so its cost is not proportional to anything the small runs measure). This script runs the lesson's own
step (helpers.spikes.asker_state.Run's compute and apply: the logits loss with w = neg/pos, Adam 1e-3)
with 2 × LSTM(64) on one batch of 128 synthetic series of 4,096 steps: one step that traces the graph,
then `--steps` timed steps. It reports the median step, the 54 steps of one epoch of 7,000 series at that median (the
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
    from helpers.spikes import asker_state as st
    data = st.variant_data("a", seed, n_series=BATCH, timesteps=TIMESTEPS, frac_series_with_anomaly=0.2,
                           n_validation=2, n_monitor=2)
    run = st.SpikeRun(data, seed=seed, units=UNITS)
    x, y = data.x.astype(np.float32), data.y.astype(np.float32)

    def one_step():
        loss, grads, *_ = run._compute(x, y)
        run._apply(grads)
        return float(loss)

    t0 = time.perf_counter()
    one_step()                                # traces the graph
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    per_epoch = SERIES // BATCH
    return {"first_step_s": first, "step_median_s": median, "steps_timed": steps, "step_times_s": times,
            "steps_per_epoch": per_epoch, "epoch_s": per_epoch * median, "positives_in_batch": int(y.sum()),
            "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "shape": f"{SERIES:,} x {TIMESTEPS:,}, 2 x LSTM({UNITS}), batch {BATCH}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.full_scale_07", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (1-20, default 3)")
    args = parser.parse_args(argv)
    if not 1 <= args.steps <= 20:
        parser.error(f"--steps {args.steps}: expected 1-20")
    print(json.dumps(measure(args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
