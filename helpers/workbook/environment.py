"""setup(): the one call every notebook makes after its parameters cell.

It validates the parameters (before any heavy import), quiets TensorFlow's log
noise, optionally creates logical CPU devices, seeds every random number
generator, starts the notebook's findings file and prints one line describing
the environment. Nothing happens at import time.
"""
from __future__ import annotations

import ast
import os
import platform
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

from .arithmetic import NUDGE_ENV, arithmetic, install_one_ulp_nudge
from .findings import record, start_findings
from .params import Int, ParameterError, unknown_parameter_error, validate

# papermill writes the values it is given into a new cell that starts with this comment
INJECTED_CELL_HEADER = "# Parameters"

MAX_LOGICAL_DEVICES = 8


@dataclass
class Run:
    """What setup() returns: the notebook name, its seed and validated parameters."""
    notebook: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    logical_devices: int = 0
    summary: str = ""

    def __getitem__(self, name: str) -> Any:
        return self.params[name]


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter (not errors) and load it with the workbook's environment defaults
    (helpers.workbook.frameworks). The warning filters come first: they also cover TensorFlow's import."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*input_shape.*")
    warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")
    from . import frameworks        # its import sets the environment defaults, then loads TensorFlow
    frameworks.quiet_logs()


def configure_logical_devices(n: int) -> list:
    """Split the physical CPU into `n` logical devices (for MirroredStrategy).

    Must run before TensorFlow executes any op; raises a clear error otherwise.
    Calling again with the same n is a no-op (re-running a setup cell).
    """
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return tf.config.list_logical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        raise RuntimeError(
            f"cannot create {n} logical CPU devices: TensorFlow has already run an op in this "
            "process, and devices can only be configured before that. Restart the kernel and "
            "run the setup cell before anything else."
        ) from err
    return tf.config.list_logical_devices("CPU")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras from one integer."""
    random.seed(seed)
    import numpy as np
    np.random.seed(seed)
    import keras
    keras.utils.set_random_seed(seed)  # also seeds tf.random and python/numpy


def environment_summary(seed: int) -> str:
    import keras
    import numpy as np
    import tensorflow as tf
    devices = [d.name.replace("/device:", "") for d in tf.config.list_logical_devices()]
    arith = arithmetic()
    other = [text for on, text in ((arith["TF_ENABLE_ONEDNN_OPTS"] == "1", "oneDNN on"),
                                   (arith["cpus_allowed"] < (os.cpu_count() or 1), f"{arith['cpus_allowed']} core(s) allowed"),
                                   (arith["NPY_DISABLE_CPU_FEATURES"], f"NumPy without {arith['NPY_DISABLE_CPU_FEATURES']}"),
                                   (arith["one_ulp_nudge"], "one initial weight per model moved by one ulp")) if on]
    return (f"Python {platform.python_version()} · TensorFlow {tf.__version__} · Keras {keras.__version__}"
            f" · NumPy {np.__version__} · {os.cpu_count()} CPU cores · devices: {', '.join(devices)}"
            f" · seed {seed}" + (f" · other arithmetic: {', '.join(other)}" if other else ""))


def injected_parameter_names(history: list[str] | None = None) -> list[str] | None:
    """The names papermill assigned in this kernel's injected parameters cell.

    papermill only warns about a name the notebook does not declare, and then
    runs the notebook with the name assigned and ignored. The kernel's input
    history (IPython's `In`) holds the injected cell's source, which starts with
    "# Parameters"; the names assigned there are what the user passed. Returns
    None outside IPython or when no parameters were injected (a run with the
    defaults, an interactive session).
    history: the cell sources to search (default: the running kernel's `In`).
    """
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with the kernel
            return None
        shell = get_ipython()
        if shell is None:
            return None
        history = list(shell.user_ns.get("In", []))
    injected = [src for src in history if isinstance(src, str)
                and src.lstrip().startswith(INJECTED_CELL_HEADER)
                and src.lstrip()[len(INJECTED_CELL_HEADER):][:1] in ("", "\n", "\r")]
    if not injected:
        return None
    try:
        tree = ast.parse(injected[-1])
    except SyntaxError:  # not papermill's cell after all
        return None
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameter_names(given: list[str] | None, declared: list[str], notebook: str = "") -> None:
    """Raise ParameterError for names in `given` that are not in `declared`."""
    unknown = [n for n in (given or []) if n not in declared]
    if unknown:
        raise unknown_parameter_error(unknown, declared, notebook)


def setup(notebook: str, *, seed: tuple, logical_devices: int | tuple = 0, verbose: bool = True,
          **params: tuple) -> Run:
    """Validate, quiet, configure devices, seed, start the findings file.

    notebook: the notebook's stem, e.g. "01_steps_epochs_and_batches".
    seed and every other keyword: a pair (value, rule) from helpers.workbook.params,
      e.g. epochs=(epochs, Int(1, 50)). A bad value raises ParameterError naming
      the parameter, the value and the allowed range, before any work starts.
    logical_devices: 0 for the default single CPU device, else 1..8; or a
      (value, rule) pair when it is itself a notebook parameter.
    A parameter name passed to papermill (-p NAME VALUE) that is not one of
    these keywords raises ParameterError listing the notebook's parameters.
    """
    declared = {"seed": seed, **params}
    if isinstance(logical_devices, tuple):
        declared["logical_devices"] = logical_devices
    try:
        check_parameter_names(injected_parameter_names(), list(declared), notebook)
        clean = validate(declared)
        logical_devices = clean.get("logical_devices", logical_devices)
        Int(0, MAX_LOGICAL_DEVICES).check("logical_devices", logical_devices)
    except ParameterError as err:
        # re-raised here so the notebook shows one short traceback, not helper internals
        raise ParameterError(str(err)) from None
    quiet_tensorflow()
    if os.environ.get(NUDGE_ENV):
        install_one_ulp_nudge()
    if logical_devices:
        configure_logical_devices(logical_devices)
    seed_value = clean["seed"]
    seed_everything(seed_value)
    start_findings(notebook, seed_value, clean)
    for name, value in arithmetic().items():      # what decides this run's floating-point arithmetic
        record(f"arithmetic_{name.lower()}", value)
    run = Run(notebook=notebook, seed=seed_value, params=clean,
              logical_devices=logical_devices, summary=environment_summary(seed_value))
    if verbose:
        print(run.summary)
    return run
