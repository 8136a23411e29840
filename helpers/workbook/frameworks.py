"""TensorFlow and Keras for the topic modules, imported once and quietly, with the workbook's environment defaults.

    from .workbook.frameworks import keras, tf

TensorFlow reads TF_ENABLE_ONEDNN_OPTS and TF_CPP_MIN_LOG_LEVEL when it loads, so a topic module that imports it
at module level may load it before `setup(...)` runs (a notebook can import its topic module in the setup cell).
Whoever imports this module first sets the defaults (os.environ.setdefault: a value already set, e.g. by the
tests' "other arithmetic" runs, wins), silences TensorFlow's start-up chatter (not errors), then loads both.
Loading TensorFlow creates no devices and runs no op, so setup can still split the CPU into logical devices.
helpers.workbook.environment.quiet_tensorflow() is this import (and quiet() again).
"""
import logging
import os
import warnings



def quiet() -> None:
    """The environment defaults and warning filters (again: a test harness may have reset the filters)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-reproducible CPU results
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*input_shape.*")
    warnings.filterwarnings("ignore", message=".*Your input ran out of data.*")


quiet()

import keras  # noqa: E402  (after the environment variables)
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel(logging.ERROR)
try:
    import absl.logging
    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover
    pass

__all__ = ["keras", "tf"]
