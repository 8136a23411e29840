"""Per-timestep anomaly labels on extremely imbalanced series (lesson 06).

Everything here is plain NumPy/Keras with explicit arguments and seeds:

    make_series(...)            synthetic series, labels on a few steps of a few series
    series_stats(...)           the statistics a learner should compare with the real data
    positive_weight_for(...)    neg/pos, the usual "balanced" weight for the rare class
    timestep_weights(...)       per-timestep sample_weight (N, T), optionally Σw-normalised
    make_split(...) → DataSplit train / monitor / test series from one generator seed
    lstm_tagger(...)            2×LSTM + Dense(1) per step: probabilities (sigmoid) or logits, output (N, T, 1)
    sigmoid, bce_from_logits_np  NumPy BCE from logits, stable at any logit
    weighted_bce_np             NumPy weighted BCE on probabilities (the class_weight traps' expectation)
    miss_arithmetic(...)        the arithmetic of a missed positive in a batch
    TaggerLoop → TaggerRun      lesson 06's training loop around the page's own train_step and loss (logits)
    plot_example_series, plot_pr_curve, plot_batch_vs_monitored   lesson 06's figures

The detection metrics (PR-AUC, recall at a precision, event recall, false alarms) are in
helpers.detection_metrics.

Shapes: series x (N, T, 1) float32, labels y (N, T) int8/float32, predictions
p (N, T) or (N, T, 1) in (0, 1) or logits z of the same shapes, weights w (N, T) float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .workbook.frameworks import keras, tf  # first: sets TensorFlow's environment
from .detection_metrics import pr_auc

# ---------------------------------------------------------------- data


@dataclass
class Series:
    """A synthetic data set. x (N, T, 1) float32; y (N, T) float32 in {0, 1};
    has_anomaly (N,) bool; onsets (N,) int (-1 where the series is normal);
    true_y (N, T): labels before jitter (equal to y when label_jitter = 0)."""
    x: np.ndarray
    y: np.ndarray
    has_anomaly: np.ndarray
    onsets: np.ndarray
    true_y: np.ndarray

    @property
    def n_series(self) -> int:
        return int(self.x.shape[0])

    @property
    def timesteps(self) -> int:
        return int(self.x.shape[1])

    def subset(self, idx) -> "Series":
        idx = np.asarray(idx)
        return Series(self.x[idx], self.y[idx], self.has_anomaly[idx], self.onsets[idx], self.true_y[idx])


def make_series(n_series: int, timesteps: int, *, frac_series_with_anomaly: float = 0.2,
                anomalies_per_series: int = 2, label_jitter: float = 0.0, pattern_length: int = 3,
                amplitude: float = 2.0, seed: int = 0) -> Series:
    """Background AR(1) noise plus a slow sine, with a short zigzag in some series.

    A fraction `frac_series_with_anomaly` of the series holds one zigzag of
    `pattern_length` steps (+a, -a, +a, ... around the background) whose
    amplitude is of the same order as the background's, so no threshold on the
    value alone finds it: a model needs the local window (a sign flip on every
    step, which AR(1) noise with coefficient 0.8 rarely does). The first
    `anomalies_per_series` steps of the zigzag are labelled 1 (the asker's
    "about two anomalous steps"). With `label_jitter` > 0, each labelled
    anomaly is shifted by ±1..2 steps with that probability (noisy labels).

    Returns Series with x (N, T, 1), y (N, T).
    """
    if anomalies_per_series >= timesteps:
        raise ValueError("anomalies_per_series must be smaller than timesteps")
    rng = np.random.default_rng(seed)
    n, t = int(n_series), int(timesteps)
    phi = 0.8
    eps = rng.normal(0.0, 0.35, size=(n, t)).astype(np.float32)
    noise = np.empty((n, t), np.float32)
    noise[:, 0] = eps[:, 0] / np.sqrt(1 - phi ** 2)
    for k in range(1, t):
        noise[:, k] = phi * noise[:, k - 1] + eps[:, k]
    period = rng.uniform(40, 120, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    steps = np.arange(t)[None, :]
    x = (np.sin(2 * np.pi * steps / period + phase) + noise).astype(np.float32)

    has_anomaly = rng.random(n) < frac_series_with_anomaly
    length = max(pattern_length, anomalies_per_series)
    onsets = np.full(n, -1, dtype=np.int64)
    y = np.zeros((n, t), np.float32)
    true_y = np.zeros((n, t), np.float32)
    margin = 3  # keep jittered labels inside the series
    lo, hi = margin, t - length - margin
    if hi <= lo:
        lo, hi = 0, t - length
    for i in np.flatnonzero(has_anomaly):
        s = int(rng.integers(lo, hi + 1))
        onsets[i] = s
        signs = np.where(np.arange(length) % 2 == 0, 1.0, -1.0)
        # a zigzag relative to the local level: amplitude comparable to the background
        x[i, s:s + length] = x[i, s - 1 if s > 0 else s] + amplitude * signs * rng.uniform(0.8, 1.2)
        true_y[i, s:s + anomalies_per_series] = 1.0
        shift = 0
        if label_jitter > 0 and rng.random() < label_jitter:
            shift = int(rng.choice([-2, -1, 1, 2]))
        a, b = np.clip([s + shift, s + shift + anomalies_per_series], 0, t)
        y[i, a:b] = 1.0
    return Series(x[..., None], y, has_anomaly, onsets, true_y)


def series_stats(data: Series) -> dict:
    """Fraction of series with an anomaly, labelled steps per such series,
    fraction of anomalous steps overall and within anomalous series, neg/pos."""
    pos = float(data.y.sum())
    n_anom = int(data.has_anomaly.sum())
    total = data.y.size
    return {
        "n_series": data.n_series,
        "timesteps": data.timesteps,
        "frac_series_with_anomaly": n_anom / data.n_series,
        "labelled_steps_per_anomalous_series": pos / max(n_anom, 1),
        "anomalous_step_fraction": pos / total,
        "anomalous_step_fraction_in_anomalous_series": pos / max(n_anom * data.timesteps, 1),
        "neg_per_pos": (total - pos) / max(pos, 1.0),
        "max_abs_value_normal_steps": float(np.abs(data.x[..., 0][data.true_y == 0]).max()),
        "max_abs_value_anomalous_steps": float(np.abs(data.x[..., 0][data.true_y == 1]).max()) if pos else 0.0,
    }


def amplitude_only_pr_auc(data: Series) -> float:
    """PR-AUC of the best 'no model' score |x|: shows amplitude alone does not find the anomalies."""
    return pr_auc(data.y, np.abs(data.x[..., 0]))


def train_test_split(data: Series, test_fraction: float = 0.25, *, seed: int = 0) -> tuple[Series, Series]:
    """Split by series (never inside a series). Both halves keep anomalous series."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(data.n_series)
    n_test = max(1, int(round(test_fraction * data.n_series)))
    return data.subset(np.sort(idx[n_test:])), data.subset(np.sort(idx[:n_test]))


@dataclass
class DataSplit:
    """train / monitor / test Series drawn from one generator seed."""
    train: Series
    monitor: Series
    test: Series


def make_split(n_series: int, timesteps: int, *, frac_series_with_anomaly: float = 0.2,
               anomalies_per_series: int = 2, label_jitter: float = 0.0, seed: int = 0,
               amplitude: float = 2.0, monitor_series: int = 32, test_fraction: float = 0.25) -> DataSplit:
    """Series from make_series(seed), split by series into train / test, and a fixed monitoring set of
    `monitor_series` extra series (same generator, seed + 10_000) scored after every few steps."""
    kw = dict(frac_series_with_anomaly=frac_series_with_anomaly, anomalies_per_series=anomalies_per_series,
              label_jitter=label_jitter, amplitude=amplitude)
    train, test = train_test_split(make_series(n_series, timesteps, seed=seed, **kw), test_fraction, seed=seed)
    return DataSplit(train, make_series(monitor_series, timesteps, seed=seed + 10_000, **kw), test)


# ---------------------------------------------------------------- weights


def positive_weight_for(y: np.ndarray) -> float:
    """neg/pos: the weight that makes positives and negatives carry equal total weight."""
    y = np.asarray(y)
    pos = float(y.sum())
    return float((y.size - pos) / max(pos, 1.0))


def timestep_weights(y: np.ndarray, positive_weight: float, *, normalise: bool = False) -> np.ndarray:
    """Per-timestep sample_weight of shape (N, T): `positive_weight` on anomalous
    steps, 1 elsewhere.

    normalise=True rescales so that the *mean* weight is 1 over the whole set;
    with Keras's default reduction (mean over the N·T elements of a batch) the
    loss is then close to Σ(w·l)/Σw instead of Σ(w·l)/(N·T) — see
    Keras's `reduction="mean_with_sample_weight"` for the exact per-batch version (lesson 06, section 3).

    Pass it to fit as sample_weight with y shaped (N, T, 1) and a model whose
    output is (N, T, 1); other shape combinations fail or weight the wrong thing.
    """
    y = np.asarray(y, np.float32)
    if y.ndim == 3:
        y = y[..., 0]
    w = np.where(y > 0.5, np.float32(positive_weight), np.float32(1.0)).astype(np.float32)
    if normalise:
        w = w / w.mean()
    return w


# ---------------------------------------------------------------- losses (NumPy, for the analysis)


def bce_np(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Element-wise binary cross-entropy, same shape as y."""
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^−z) in float64, without overflow at any logit."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, np.float64)))


def bce_from_logits_np(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Element-wise binary cross-entropy from logits, softplus(z) − y·z (= −log σ(z) for y = 1,
    −log(1 − σ(z)) for y = 0), exact at any logit. y, z: equal shapes; float64."""
    z = np.asarray(z, np.float64)
    return np.logaddexp(0.0, z) - np.asarray(y, np.float64) * z


def miss_arithmetic(positive_weight: float, logit: float, n_missed: int, *, steps_in_batch: int = 128 * 4096,
                    normal_loss: float = 0.005, clip: float = 1e-7) -> dict:
    """The arithmetic of missed positives in one batch under Keras's reduction Σ(w·l)/(B·T).

    Each of `n_missed` positive steps sits at `logit` with weight `positive_weight`; every other step
    costs `normal_loss` (fitted positives cost next to nothing). Returns, for the loss from logits and for
    a loss on probabilities clipped to [clip, 1 − clip]: the loss of one miss, its gradient with respect to
    its logit, and the batch mean with the misses.
    """
    w, z = float(positive_weight), float(logit)
    p = float(sigmoid(z))
    loss_logits = w * float(np.logaddexp(0.0, -z))                  # w·softplus(−z) = −w·log σ(z)
    loss_clipped = -w * float(np.log(min(max(p, clip), 1 - clip)))
    grad = -w * (1.0 - p)                                          # ∂/∂z of w·softplus(−z)
    grad_clipped = grad if clip < p < 1 - clip else 0.0            # the clip is flat there: no gradient
    others = (steps_in_batch - n_missed) * normal_loss
    return {"p": p, "loss_of_miss_logits": loss_logits, "loss_of_miss_clipped": loss_clipped,
            "grad_logits": grad, "grad_clipped": grad_clipped,
            "batch_loss_logits": (others + n_missed * loss_logits) / steps_in_batch,
            "batch_loss_clipped": (others + n_missed * loss_clipped) / steps_in_batch}


# ---------------------------------------------------------------- model and Keras losses


def lstm_tagger(units: int = 32, layers: int = 2, *, output_bias: float | None = None,
                seed: int | None = None, name: str = "lstm_tagger", logits: bool = False):
    """LSTM(units) × layers (return_sequences) → Dense(1) per step, with a sigmoid unless `logits`.

    Input (N, T, 1) → probabilities (N, T, 1), or logits (N, T, 1) with logits=True (pair it with a loss
    from logits: BinaryCrossentropy(from_logits=True)). `output_bias` initialises the final bias
    (prior-bias init: log(π/(1−π)) for a positive rate π). Uncompiled.
    """
    init = keras.initializers.GlorotUniform(seed=seed)
    rec = keras.initializers.Orthogonal(seed=None if seed is None else seed + 1)
    inputs = keras.Input(shape=(None, 1))
    h = inputs
    for k in range(layers):
        h = keras.layers.LSTM(units, return_sequences=True, kernel_initializer=init,
                              recurrent_initializer=rec, name=f"lstm{k}")(h)
    bias = keras.initializers.Constant(output_bias) if output_bias is not None else "zeros"
    out = keras.layers.Dense(1, activation=None if logits else "sigmoid", bias_initializer=bias,
                             kernel_initializer=init, name="per_step")(h)
    return keras.Model(inputs, out, name=name)


def weighted_bce_np(y: np.ndarray, p: np.ndarray, w: np.ndarray, *, normalise: bool = False) -> float:
    """mean(w·l) (Keras's reduction) or Σ(w·l)/Σw over equal-shaped arrays."""
    l = bce_np(np.asarray(y, np.float64), np.asarray(p, np.float64))
    w = np.asarray(w, np.float64)
    return float((w * l).sum() / (w.sum() if normalise else l.size))


def class_weight_traps(seed: int = 0) -> dict:
    """Reproduce the two `class_weight` traps with per-timestep targets and the
    working `sample_weight` shapes, on a tiny model (a few ms each).

    Returns a dict:
      raises_3d (bool) and error_3d (str): y (N, T, 1) with class_weight.
      loss_2d_class_weight, loss_expected_2d, loss_unweighted: y (N, T) with
        class_weight={0: 1, 1: w} runs, but Keras takes the argmax over T as
        each series' "class" (see `keras_class_weight_as_keras_does`): only
        series 0, whose anomaly sits at step 1, gets the weight w, on all of
        its steps; the others get 1.
      weights_wrong_2d (bool): the 2-D run's loss is far from the per-step one
        and matches the argmax reconstruction.
      loss_sample_weight_3d: y (N, T, 1) + sample_weight (N, T) — equals the
        expected per-step weighting mean(w·l).
      raises_2d_with_sample_weight (bool) and error_2d_sw: y (N, T) with
        sample_weight (N, T).
    """

    rng = np.random.default_rng(seed)
    n, t, w_pos = 8, 16, 50.0
    x = rng.normal(size=(n, t, 1)).astype(np.float32)
    y = np.zeros((n, t), np.float32)
    for i in range(0, n, 2):  # every other series holds an anomaly; series 0's at step 1
        y[i, 1 if i == 0 else rng.integers(2, t)] = 1.0

    def model():
        keras.utils.set_random_seed(seed)
        inp = keras.Input(shape=(t, 1))
        out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones",
                                 bias_initializer="zeros")(inp)
        m = keras.Model(inp, out)
        m.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")
        return m

    m = model()
    p = np.asarray(m(x))[..., 0]                 # (N, T) predictions of the untrained model
    w = timestep_weights(y, w_pos)
    expected = weighted_bce_np(y, p, w)            # mean(w·l) per step: what we want
    unweighted = weighted_bce_np(y, p, np.ones_like(w))
    out: dict = {"loss_expected_2d": expected, "loss_unweighted": unweighted,
                 "loss_argmax_reconstruction": keras_class_weight_as_keras_does(y, p, {0: 1.0, 1: w_pos})}
    try:
        h = m.fit(x, y[..., None], class_weight={0: 1.0, 1: w_pos}, batch_size=n, epochs=1, verbose=0)
        out["raises_3d"], out["error_3d"] = False, ""
    except Exception as err:  # noqa: BLE001 — the point is to show which error
        out["raises_3d"], out["error_3d"] = True, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    h = model().fit(x, y, class_weight={0: 1.0, 1: w_pos}, batch_size=n, epochs=1, verbose=0, shuffle=False)
    out["loss_2d_class_weight"] = float(h.history["loss"][0])
    h = model().fit(x, y[..., None], sample_weight=w, batch_size=n, epochs=1, verbose=0, shuffle=False)
    out["loss_sample_weight_3d"] = float(h.history["loss"][0])
    try:
        model().fit(x, y, sample_weight=w, batch_size=n, epochs=1, verbose=0)
        out["raises_2d_with_sample_weight"], out["error_2d_sw"] = False, ""
    except Exception as err:  # noqa: BLE001
        out["raises_2d_with_sample_weight"] = True
        out["error_2d_sw"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    rel = abs(out["loss_2d_class_weight"] - expected) / expected
    out["weights_wrong_2d"] = bool(rel > 0.2 and abs(out["loss_2d_class_weight"]
                                                       - out["loss_argmax_reconstruction"]) < 1e-3 * expected + 1e-5)
    return out


def keras_class_weight_as_keras_does(y: np.ndarray, p: np.ndarray, class_weight: dict) -> float:
    """What Keras 3 computes for targets y (N, T) with class_weight.

    keras' class_weight_to_sample_weights takes argmax over the last axis as
    each *series'* class — for per-step 0/1 labels that is the index of the
    first anomalous step (0 for a normal series) — and looks it up in
    class_weight, 1.0 when absent. So only series whose first anomaly sits at
    step 1 get the weight. The loss is then mean over series of
    weight · mean_T(l). y, p: (N, T). Returns that loss.
    """
    y = np.asarray(y)
    ids = np.argmax(y, axis=-1)
    sw = np.array([class_weight.get(int(k), 1.0) for k in ids], np.float64)
    l = bce_np(np.asarray(y, np.float64), np.asarray(p, np.float64)).mean(axis=-1)
    return float((sw * l).mean())


# ---------------------------------------------------------------- lesson 06's training loop


@dataclass
class TaggerRun:
    """One run of TaggerLoop.fit. Per optimizer step: batch_loss (the step's own loss, not a running mean)
    and batch_positives (labelled steps in the batch); monitor_loss at monitor_steps (0 = before training)
    on the fixed monitoring set; the final weights, and logits(x) / proba(x) (N, T) of the trained model."""
    batch_loss: np.ndarray
    batch_positives: np.ndarray
    monitor_steps: np.ndarray
    monitor_loss: np.ndarray
    weights: list
    loop: "TaggerLoop"

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.loop.logits(x, self.weights)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(x))


class TaggerLoop:
    """Lesson 06's training loop around the page's own functions: `step(model, optimizer, x, y, w)` → the
    batch loss (one optimizer update) and `loss(y, logits, w)` → a scalar, with y (B, T, 1) and w (B, T).

    One LSTM tagger with a logits output (lstm_tagger(units, logits=True)) and one Adam optimizer; the step
    is compiled once (XLA) and reused by every run, which restarts from freshly seeded weights and a zeroed
    Adam state. The loop only shuffles, batches (the last partial batch dropped) and scores the monitoring set.
    """

    def __init__(self, units: int, *, step, loss, jit_compile: bool = True):
        self.units = units
        self.model = lstm_tagger(units, 2, seed=0, logits=True)
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.optimizer.build(self.model.trainable_variables)
        model, opt = self.model, self.optimizer
        self._step = tf.function(lambda x, y, w: step(model, opt, x, y, w), jit_compile=jit_compile,
                                 reduce_retracing=True)
        self._loss = tf.function(lambda x, y, w: loss(y, model(x, training=False), w), jit_compile=jit_compile)
        self._logits = tf.function(lambda x: model(x, training=False)[..., 0], reduce_retracing=True)

    def reset(self, seed: int, learning_rate: float) -> None:
        """Weights as lstm_tagger(units, seed=seed, logits=True) draws them; Adam's state zeroed."""
        keras.utils.set_random_seed(seed)
        self.model.set_weights(lstm_tagger(self.units, 2, seed=seed, logits=True).get_weights())
        for v in self.optimizer.variables:
            v.assign(np.zeros(v.shape, v.dtype))
        self.optimizer.learning_rate = learning_rate

    def logits(self, x: np.ndarray, weights: list | None = None, batch_size: int = 256) -> np.ndarray:
        """Logits (N, T) float64 for x (N, T, 1), with `weights` loaded first if given."""
        if weights is not None:
            self.model.set_weights(weights)
        return np.concatenate([np.asarray(self._logits(x[i:i + batch_size]), np.float64)
                               for i in range(0, len(x), batch_size)])

    def fit(self, split: DataSplit, *, positive_weight: float, monitor_weight: float, learning_rate: float,
            epochs: int, batch_size: int, seed: int, monitor_every: int = 2, desc: str = "training") -> TaggerRun:
        """Train on split.train with weight `positive_weight` on the labelled steps (1.0: plain BCE), from
        seeded weights; every `monitor_every` steps score split.monitor with weight `monitor_weight` (the
        same for every run, so runs are compared on one scale)."""
        from tqdm.auto import tqdm
        self.reset(seed, learning_rate)
        rng = np.random.default_rng(seed)
        x, y = split.train.x, split.train.y
        w = timestep_weights(y, positive_weight)
        mon = split.monitor
        monitor = (mon.x, mon.y[..., None], timestep_weights(mon.y, monitor_weight))
        losses, positives = [], []
        mon_steps, mon_loss = [0], [float(self._loss(*monitor))]
        for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=True):
            order = rng.permutation(len(x))
            for b in range(len(x) // batch_size):
                idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
                losses.append(float(self._step(x[idx], y[idx][..., None], w[idx])))
                positives.append(int(y[idx].sum()))
                if len(losses) % monitor_every == 0:
                    mon_steps.append(len(losses))
                    mon_loss.append(float(self._loss(*monitor)))
        return TaggerRun(np.array(losses), np.array(positives), np.array(mon_steps), np.array(mon_loss),
                         [v.copy() for v in self.model.get_weights()], self)


# ---------------------------------------------------------------- lesson 06's figures


def plot_example_series(data: Series, n: int = 3, zoom: int = 12):
    """Anomalous series (top row, full length) and a ±zoom window around each anomaly
    (bottom row), labelled steps marked. Returns the figure."""
    from .workbook.plotting import figure
    idx = np.flatnonzero(data.has_anomaly)[:n]
    fig, axes = figure(len(idx), 2, finding="The anomaly is a 3-step zigzag: visible in its window, "
                                            "not by its height")
    axes = np.atleast_2d(axes)
    for k, i in enumerate(idx):
        x, y, s = data.x[i, :, 0], data.y[i], int(data.onsets[i])
        for row, (lo, hi) in enumerate([(0, data.timesteps), (max(0, s - zoom), min(data.timesteps, s + zoom))]):
            ax = axes[row, k]
            t = np.arange(lo, hi)
            ax.plot(t, x[lo:hi], lw=1)
            ax.scatter(t[y[lo:hi] > 0], x[lo:hi][y[lo:hi] > 0], color="red", zorder=3, label="labelled anomaly")
            ax.set_xlabel("timestep")
            ax.set_ylabel("value (a.u.)")
            ax.set_title(f"series {i}" + (" (zoom)" if row else ""), fontsize=9)
    axes[0, 0].legend(loc="lower left")
    return fig


def plot_pr_curve(curves: dict, finding: str, marks: dict | None = None):
    """Precision-recall curves {label: precision_recall_curve(...)} on one axis, with optional
    marked operating points {label: (recall, precision)}. Returns the figure."""
    from .workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=6.5, height=4)
    for label, c in curves.items():
        ax.step(c["recall"], c["precision"], where="post", label=label)
    for label, (r, p) in (marks or {}).items():
        ax.scatter([r], [p], s=50, zorder=4, label=label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall (anomalous steps found)")
    ax.set_ylabel("precision (alarms that are right)")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_batch_vs_monitored(run: TaggerRun, finding: str):
    """Per-batch training loss (coloured by the labelled steps in the batch) and the monitored loss on
    the fixed set, log scale. Returns the figure."""
    from .workbook.plotting import figure
    fig, ax = figure(1, 1, finding=finding, width=9, height=3.8)
    steps = np.arange(1, len(run.batch_loss) + 1)
    sc = ax.scatter(steps, run.batch_loss, c=run.batch_positives, s=9, cmap="viridis", label="per-batch loss")
    ax.plot(run.monitor_steps, run.monitor_loss, color="black", lw=1.4, label="monitored loss (fixed set)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted BCE, Σ(w·l)/(B·T)")
    fig.colorbar(sc, ax=ax, label="labelled steps in the batch")
    ax.legend(loc="upper right")
    return fig
