"""Fresh Python interpreters with logical devices, for work that needs its own TensorFlow runtime (lesson 05).

TensorFlow allows one MirroredStrategy size per process (a second size fails with a collective
group-size error), so each replica count runs in its own spawned interpreter:

    ChildInterpreter(logical_devices)   one interpreter that stays alive between calls (TF imported once)
    run_in_child(fn, ...)               one call in a fresh interpreter
    ReplicaPool(replica_counts, ...)    one interpreter per replica count > 1; count 1 runs here
    split_gpu / replica_devices         the devices a k-replica strategy uses (logical GPUs or CPUs)

The functions a child runs are module-level and take and return picklable values (see
helpers.distributed). This module imports TensorFlow only inside the child and the device functions:
the bootstrap must start before TensorFlow initializes its devices.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from typing import Any, Callable, Sequence

def _child_init(logical_devices: int) -> None:
    """Runs first in a fresh interpreter: quiet TF, create the logical devices (GPUs split if needed)."""
    from .workbook.environment import configure_logical_devices, quiet_tensorflow
    quiet_tensorflow()
    if logical_devices:
        configure_logical_devices(logical_devices)
        split_gpu(logical_devices)


def split_gpu(n: int, memory_mb: int = 2048) -> int:
    """With fewer than n physical GPUs but at least one, split GPU 0 into n logical GPUs.

    Must run before TensorFlow initializes the GPU. Returns the number of GPUs
    (logical) this process will see; 0 on a machine without one.
    """
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus or len(gpus) >= n or n < 2:
        return len(gpus)
    if tf.config.get_logical_device_configuration(gpus[0]) is None:
        tf.config.set_logical_device_configuration(
            gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb) for _ in range(n)])
    return n


def replica_devices(replicas: int) -> list[str]:
    """The devices a `replicas`-way MirroredStrategy uses here: GPUs (real or logical) when there
    are enough, else logical CPU devices. Raises if neither suffices."""
    import tensorflow as tf
    for kind in ("GPU", "CPU"):
        names = [d.name for d in tf.config.list_logical_devices(kind)]
        if len(names) >= replicas:
            return names[:replicas]
    raise RuntimeError(f"{replicas} replicas need {replicas} logical GPU or CPU devices; "
                       f"this process has {len(tf.config.list_logical_devices('CPU'))} CPU devices")


class ChildInterpreter:
    """A fresh Python interpreter (spawned, not forked) that runs module-level functions.

    Use one per MirroredStrategy size; it stays alive between calls, so TensorFlow
    is imported once. Always closed (and killed if stuck) by `close()` / `with`.

        with ChildInterpreter(logical_devices=4) as child:
            result = child.call(fit_weights, replicas=4, ...)
    """

    def __init__(self, logical_devices: int, timeout: float = 300.0):
        self.logical_devices = logical_devices
        self.timeout = timeout
        self._pool = cf.ProcessPoolExecutor(
            max_workers=1, mp_context=mp.get_context("spawn"),
            initializer=_child_init, initargs=(logical_devices,))
        self._pool.submit(os.getpid)  # start the interpreter (and its TensorFlow import) now

    def call(self, fn: Callable, *args, **kwargs) -> Any:
        """fn(*args, **kwargs) in the child; its (picklable) result, or its exception re-raised."""
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.timeout)
        except cf.TimeoutError:
            self.close(kill=True)
            raise TimeoutError(f"{fn.__name__} did not finish within {self.timeout:.0f} s in the child")

    def close(self, kill: bool = False) -> None:
        if self._pool is None:
            return
        procs = list(getattr(self._pool, "_processes", {}).values())
        if kill:
            for p in procs:
                p.kill()
        self._pool.shutdown(wait=not kill, cancel_futures=True)
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(kill=exc_type is not None)


def run_in_child(fn: Callable, *args, logical_devices: int, timeout: float = 300.0, **kwargs) -> Any:
    """fn(*args, **kwargs) in a fresh interpreter with `logical_devices` CPU devices."""
    with ChildInterpreter(logical_devices, timeout) as child:
        return child.call(fn, *args, **kwargs)


class ReplicaPool:
    """One child interpreter per replica count > 1; replica count 1 runs in this process.

        pool = ReplicaPool([1, 2, 4], logical_devices=4)
        pool.call(2, fit_weights, ...)   # runs with a 2-replica MirroredStrategy
        pool.close()
    """

    def __init__(self, replica_counts: Sequence[int], logical_devices: int, timeout: float = 300.0):
        self.counts = sorted(set(int(k) for k in replica_counts))
        self.logical_devices = logical_devices
        self.timeout = timeout
        # started at once, so their TensorFlow imports overlap with work in this process
        self._children = {k: ChildInterpreter(logical_devices, timeout) for k in self.counts if k > 1}

    def call(self, replicas: int, fn: Callable, **kwargs) -> Any:
        if replicas == 1:
            return fn(replicas=1, **kwargs)
        if replicas not in self._children:
            self._children[replicas] = ChildInterpreter(self.logical_devices, self.timeout)
        return self._children[replicas].call(fn, replicas=replicas, **kwargs)

    def release(self, replicas: int) -> None:
        """Stop the child for `replicas` now (its memory back); a later call starts a new one."""
        child = self._children.pop(replicas, None)
        if child is not None:
            child.close()

    def close(self) -> None:
        for child in self._children.values():
            child.close()
        self._children.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
