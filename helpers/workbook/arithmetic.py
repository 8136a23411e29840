"""Another machine's arithmetic, on this machine: what the portability tests perturb, and what a run used.

A chaotic training outcome differs from one CPU to another because the order of floating-point
sums differs. Three ways to get other arithmetic here (each is an environment variable, so it reaches
the kernel papermill starts):

    TF_ENABLE_ONEDNN_OPTS=1             TensorFlow's oneDNN kernels instead of its own (the workbook's
                                        default is 0); pinned to one core, TensorFlow also picks other
                                        thread counts (`taskset -c 0`, or `cpus=` in the tests)
    NPY_DISABLE_CPU_FEATURES=...        NumPy without its AVX-512 paths ("X86_V4 AVX512_ICL AVX512_SPR"
                                        on a CPU that has them): other bits from e.g. log1p
    WORKBOOK_NUDGE_ONE_WEIGHT=1         one initial weight of every seeded model moved by one ulp: the
                                        smallest change of a run there is, and it moves any chaotic
                                        result as much as another CPU does

    install_one_ulp_nudge()     what setup() calls when WORKBOOK_NUDGE_ONE_WEIGHT is set
    arithmetic()                the settings in effect, recorded by setup() as the findings `arithmetic_*`
    cpus_allowed(), pinned()    the cores this process may use; a block (and what it starts) on fewer
    AVX512_OFF                  the NPY_DISABLE_CPU_FEATURES value above
"""
from __future__ import annotations

import contextlib
import os

NUDGE_ENV = "WORKBOOK_NUDGE_ONE_WEIGHT"
AVX512_OFF = "X86_V4 AVX512_ICL AVX512_SPR"

_installed = False
_armed = False


def _nudged(variable) -> None:
    """Move element 0 of `variable` up by one ulp (its own dtype's)."""
    import numpy as np
    value = np.array(variable.numpy())
    flat = value.reshape(-1)
    flat[0] = np.nextafter(flat[0], np.inf, dtype=flat.dtype)
    variable.assign(value)


def install_one_ulp_nudge() -> None:
    """After every keras.utils.set_random_seed, the first trainable floating-point kernel created
    (the first layer's weights of the model built next) gets one ulp added to its first element.

    Every model of the workbook is built right after seeding, so each gets exactly one nudged weight."""
    global _installed
    if _installed:
        return
    import keras
    import numpy as np
    from keras.src.layers.layer import Layer
    from keras.src.utils import rng_utils

    seed_fn = rng_utils.set_random_seed
    add_weight = Layer.add_weight

    def set_random_seed(seed):
        global _armed
        seed_fn(seed)
        _armed = True

    def add_weight_nudged(self, *args, **kwargs):
        global _armed
        variable = add_weight(self, *args, **kwargs)
        if (_armed and variable.trainable and "float" in str(variable.dtype)
                and "kernel" in variable.path.rsplit("/", 1)[-1] and int(np.prod(variable.shape)) > 0):
            _nudged(variable)
            _armed = False
        return variable

    rng_utils.set_random_seed = set_random_seed
    keras.utils.set_random_seed = set_random_seed
    Layer.add_weight = add_weight_nudged
    _installed = True


def cpus_allowed() -> int:
    """The cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def pinned(cpus):
    """Run the block, and the processes it starts (a kernel inherits it), on `cpus` only; None or
    a system without CPU affinity: unchanged."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def arithmetic() -> dict:
    """The settings that decide this process's floating-point arithmetic."""
    return {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
            "cpus_allowed": cpus_allowed(),
            "NPY_DISABLE_CPU_FEATURES": os.environ.get("NPY_DISABLE_CPU_FEATURES", ""),
            "one_ulp_nudge": bool(os.environ.get(NUDGE_ENV))}

