"""A seeded synthetic stand-in for multichannel sensor windows with binary labels.

The story: a machine carries `channels` sensors (accelerometers, gyroscopes,
a thermometer...), each reporting in its own units with its own offset.
A window is `window_length` consecutive readings. Label 1 ("fault") means the
machine vibrates harder than normal during that window; label 0 is normal
running. Window-to-window variation in vibration level makes the two classes
overlap, so no classifier reaches 100 %.

What matters for batch normalization:
  * the channels sit at very different offsets and scales (so a network whose
    normalization is removed sees raw, badly scaled activations);
  * the label lives in each window's *level* (its vibration amplitude relative
    to the population), so normalizing each window by its own statistics
    (instance normalization) throws the label away, while normalizing with
    population statistics keeps it.

The best possible classifier thresholds the hidden level: bayes_accuracy() is its
accuracy expected over draws, oracle_accuracy(data) its accuracy on one test set.

Everything is drawn from one seeded NumPy generator; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAULT_AMPLITUDE = 2.0      # fault windows vibrate this many times harder (median)
AMPLITUDE_SPREAD = 0.2     # log-normal sigma of the per-window vibration level
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Windows:
    """x_*: float32 (N, window_length, channels); y_*: int32 (N,) in {0, 1}.

    offsets, gains: float64 (channels,) — each sensor's offset and scale.
    level_test: the generator's hidden level of each test window (what the best possible
    classifier would threshold; see oracle_accuracy).
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    offsets: np.ndarray
    gains: np.ndarray
    level_test: np.ndarray | None = None   # float64 (N_test,): each test window's drawn vibration level a

    @property
    def window_length(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[2])


def sensor_windows(n_windows: int, window_length: int, channels: int, *, seed: int,
                   fault_amplitude: float = FAULT_AMPLITUDE, amplitude_spread: float = AMPLITUDE_SPREAD
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw `n_windows` labelled windows.

    Returns (x, y, offsets, gains): x float32 (n_windows, window_length, channels),
    y int32 (n_windows,) with about half 1s, offsets/gains float64 (channels,).
    See _draw for the model; it also returns each window's level.
    """
    x, y, offsets, gains, _ = _draw(n_windows, window_length, channels, seed=seed, fault_amplitude=fault_amplitude,
                                    amplitude_spread=amplitude_spread)
    return x, y, offsets, gains


def _draw(n_windows: int, window_length: int, channels: int, *, seed: int, fault_amplitude: float,
          amplitude_spread: float):
    """sensor_windows' draw, plus each window's vibration level a (float64 (n_windows,)).

    Each channel c reads  offset_c + gain_c * a * (sin(2π f_c t + φ) + 0.5 · AR(1) noise),
    where the window's vibration level a is log-normal around 1 for normal
    windows and around `fault_amplitude` for faults (sigma `amplitude_spread`).
    """
    if n_windows < 2 or window_length < 2 or channels < 1:
        raise ValueError("need n_windows >= 2, window_length >= 2, channels >= 1")
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-40.0, 40.0, size=channels)          # sensor units: far from 0
    gains = np.exp(rng.uniform(np.log(0.5), np.log(20.0), size=channels))
    freqs = rng.uniform(0.03, 0.2, size=channels)              # cycles per step
    y = (rng.random(n_windows) < 0.5).astype(np.int32)
    level = np.exp(rng.normal(0.0, amplitude_spread, size=n_windows)) * np.where(y == 1, fault_amplitude, 1.0)
    t = np.arange(window_length, dtype=np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=(n_windows, 1, channels))
    tone = np.sin(2 * np.pi * freqs[None, None, :] * t[None, :, None] + phase)
    # AR(1) noise with coefficient 0.7: smooth, like a real sensor's
    shocks = rng.normal(size=(n_windows, window_length, channels))
    noise = np.empty_like(shocks)
    noise[:, 0] = shocks[:, 0]
    for i in range(1, window_length):
        noise[:, i] = 0.7 * noise[:, i - 1] + np.sqrt(1 - 0.49) * shocks[:, i]
    x = offsets + gains * level[:, None, None] * (tone + 0.5 * noise)
    return x.astype(np.float32), y, offsets, gains, level


def load_windows(n_windows: int = 2000, window_length: int = 140, channels: int = 6, *, seed: int,
                 test_fraction: float = TEST_FRACTION, **generator_kwargs) -> Windows:
    """sensor_windows() split into train and test (the last `test_fraction` of the draws).

    generator_kwargs (fault_amplitude, amplitude_spread) go to sensor_windows.
    """
    kwargs = {"fault_amplitude": FAULT_AMPLITUDE, "amplitude_spread": AMPLITUDE_SPREAD, **generator_kwargs}
    x, y, offsets, gains, level = _draw(n_windows, window_length, channels, seed=seed, **kwargs)
    n_test = max(1, int(round(n_windows * test_fraction)))
    return Windows(x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:], offsets, gains, level[-n_test:])


def oracle_accuracy(data: Windows, fault_amplitude: float = FAULT_AMPLITUDE) -> float:
    """The best possible classifier's accuracy on these very test windows: it knows each window's hidden
    level a and answers "fault" above the geometric midpoint √fault_amplitude (the Bayes rule of
    bayes_accuracy). Its expectation over draws is bayes_accuracy(); on one test set it varies like any
    accuracy measured on N windows, so it is the fair, paired yardstick for a model scored on the same set."""
    if data.level_test is None:
        raise ValueError("these Windows carry no test levels: make them with load_windows")
    return float(np.mean((data.level_test > np.sqrt(fault_amplitude)) == (data.y_test == 1)))


def bayes_accuracy(fault_amplitude: float = FAULT_AMPLITUDE, amplitude_spread: float = AMPLITUDE_SPREAD) -> float:
    """Best possible accuracy from the vibration level alone (balanced classes).

    Two log-normal levels whose logs differ by log(fault_amplitude) with equal
    sigma: the best threshold sits halfway, accuracy Φ(log(fault_amplitude) / (2 sigma)).
    (The level is estimated from a finite window, so real classifiers stay a bit below.)
    """
    from math import erf, log, sqrt
    z = log(fault_amplitude) / (2 * amplitude_spread)
    return 0.5 * (1 + erf(z / sqrt(2)))
