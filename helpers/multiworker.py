"""Several worker processes on 127.0.0.1 forming a MultiWorkerMirroredStrategy cluster (lesson 05).

    run_multiworker(workers=2, ...)   runs multiworker_job in each worker, with TF_CONFIG naming the
                                      cluster on free loopback ports; every worker's result; the processes
                                      are always cleaned up (killed as a group on timeout or error)
    multiworker_job(...)              what each worker runs: the custom loop, then model.fit
    tf_config / free_port             the cluster description

Weights travel as lists of numpy arrays (model.get_weights() order).
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .workbook.frameworks import keras, tf  # first: sets TensorFlow's environment
from .distributed import batches_dataset, distributed_step, loss_function, replica_model, sgd_replica_model, short_error
from .workbook.findings import REPO_ROOT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tf_config(ports: Sequence[int], index: int) -> str:
    """The TF_CONFIG JSON for worker `index` of a loopback cluster."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def multiworker_job(*, weights: list, x: np.ndarray, y: np.ndarray, sizes: Sequence[int],
                    learning_rate: float, try_fit: bool = True, hidden: int = 64) -> dict:
    """Runs in each worker process (TF_CONFIG already set): custom loop, then model.fit.

    Custom loop: strategy.experimental_distribute_dataset splits each global batch of
    `sizes` across workers; strategy.run computes gradients; SGD applies the sum of
    (mean loss / k) gradients. Returns {"weights", "fit_error", "workers"}.
    """
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model, opt = sgd_replica_model(strategy, weights, learning_rate, hidden)
    # the Keras loss object divides by num_replicas_in_sync itself; the optimizer sums across workers
    step = distributed_step(strategy, model, opt, loss_function("keras_object", strategy), update="replica")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = batches_dataset(x, y, sizes).with_options(options)
    for xb, yb in strategy.experimental_distribute_dataset(ds):
        step(xb, yb)
    result = {"weights": [np.asarray(w) for w in model.get_weights()], "fit_error": "",
              "workers": strategy.num_replicas_in_sync}
    if try_fit:
        with strategy.scope():
            fit_model = replica_model("mlp", hidden=hidden)
            fit_model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
        try:
            fit_model.fit(batches_dataset(x, y, sizes).with_options(options), epochs=1, verbose=0, shuffle=False)
        except Exception as err:  # noqa: BLE001 - the failure is what we report
            result["fit_error"] = short_error(f"{type(err).__name__}: {err}", 200)
    return result


def _worker_main(job_path: str, result_path: str) -> None:
    """Entry point of a worker process: load the job, run it, pickle the result."""
    from .workbook.environment import quiet_tensorflow
    quiet_tensorflow()
    with open(job_path, "rb") as fh:
        kwargs = pickle.load(fh)
    result = multiworker_job(**kwargs)
    with open(result_path, "wb") as fh:
        pickle.dump(result, fh)
    sys.stdout.flush()
    os._exit(0)  # skip collective teardown, which can hang after the peer has gone


def run_multiworker(*, workers: int = 2, timeout: float = 180.0, **job) -> list[dict]:
    """Run multiworker_job(**job) as `workers` processes on 127.0.0.1; every worker's result.

    Each worker gets TF_CONFIG naming the cluster (free loopback ports) and its
    index. The processes run in their own process group and are killed (group
    and all) on timeout, on error, or if this function is interrupted.
    """
    ports = [free_port() for _ in range(workers)]
    procs, results = [], []
    with tempfile.TemporaryDirectory(prefix="multiworker-") as tmp:
        job_path = Path(tmp) / "job.pkl"
        job_path.write_bytes(pickle.dumps(job))
        try:
            for i in range(workers):
                env = dict(os.environ, TF_CONFIG=tf_config(ports, i), TF_CPP_MIN_LOG_LEVEL="2",
                           CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO_ROOT))
                code = (f"from helpers.multiworker import _worker_main; "
                        f"_worker_main({str(job_path)!r}, {str(Path(tmp) / f'result{i}.pkl')!r})")
                procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO_ROOT),
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            deadline = time.monotonic() + timeout
            for i, p in enumerate(procs):
                try:
                    out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise TimeoutError(f"worker {i} did not finish within {timeout:.0f} s")
                if p.returncode != 0:
                    tail = out.decode(errors="replace")[-1500:]
                    raise RuntimeError(f"worker {i} exited with code {p.returncode}:\n{tail}")
                results.append(pickle.loads((Path(tmp) / f"result{i}.pkl").read_bytes()))
        finally:
            for p in procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait()
    return results
