"""TensorFlow and Keras for the topic modules, loaded once with the workbook's environment defaults.

    from .workbook.frameworks import keras, tf

TensorFlow reads TF_ENABLE_ONEDNN_OPTS and TF_CPP_MIN_LOG_LEVEL when it loads, so a topic module that imports it
at module level may load it before `setup(...)` runs (a notebook can import its topic module in the setup cell).
Whoever imports this module first therefore sets the same defaults as setup (os.environ.setdefault: a value
already set, e.g. by the tests' "other arithmetic" runs or by your own script, wins; where TensorFlow is already
loaded they change nothing). Loading TensorFlow creates no devices and runs no op, so setup can still split the
CPU into logical devices afterwards. Silencing TensorFlow's chatter (warning filters, log levels) is left to
setup, through helpers.workbook.environment.quiet_tensorflow: importing a topic module from your own script
changes no warning filter or logger of yours.
"""
import logging
import os


def environment_defaults() -> None:
    """The workbook's TensorFlow defaults, where nothing has set them: C++ log level 2, oneDNN off (bit-reproducible
    CPU results)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


environment_defaults()

import keras  # noqa: E402  (after the environment variables)
import tensorflow as tf  # noqa: E402


def quiet_logs() -> None:
    """TensorFlow's and absl's Python loggers at ERROR (not errors silenced)."""
    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


__all__ = ["keras", "tf", "environment_defaults", "quiet_logs"]
