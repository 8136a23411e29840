"""Batch normalization at inference time: a Conv1D+BN window classifier, the
ways to call it, the "accepted answer" variants (BN removed, BN in training
mode on a batch of one), BN folded into the preceding layer for deployment,
a streaming batch-of-one predictor with its latency, an accuracy's interval,
the widget function, and batch1_accuracies (a trained model called the four ways lesson 03 compares).
Lesson 03's committed MNIST-1D table is helpers.results.mnist1d_inference.

Shapes: windows x are float32 (N, T, C) — T time steps, C channels; labels y
are int (N,) in {0, 1}; probabilities are float (N,) for the "fault" class.
The model is a plain chain of layers (functional), so every helper here can
walk `model.layers` in order.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .workbook.frameworks import keras, tf  # first: sets TensorFlow's environment
from .batchnorm import preserved_bn_state
from .models import conv1d_bn_model
from .training import accuracy, compiled_call, predict_proba
from .workbook.tables import Table


def train_tracked(data, *, momentum: float, epochs: int, batch_size: int, seed: int, desc: str | None = None,
                  train_epochs=None):
    """Build conv1d_bn_model(momentum) from `seed` and fit it on data.x_train/y_train.

    data: a helpers.timeseries.Windows. Re-seeding first gives every call the same
    initial weights and batch order, so two momenta differ only in their moving
    statistics. Returns (model, curves): curves holds the per-epoch lists of
    ModeAccuracy (train_epochs as there) plus "fit_accuracy" (what fit logs,
    training mode) and "seconds".
    """
    from .training import train
    keras.utils.set_random_seed(seed)
    model = conv1d_bn_model(data.window_length, data.channels, momentum=momentum)
    tracker = ModeAccuracy(data.x_train, data.y_train, data.x_test, data.y_test, batch_size, train_epochs)
    hist = train(model, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                 desc=desc or f"BN momentum {momentum}", callbacks=[tracker.callback()])
    curves = dict(tracker.curves, fit_accuracy=hist.metrics["accuracy"], seconds=hist.seconds)
    return model, curves


class ModeAccuracy:
    """A Keras callback factory: after every epoch, the test accuracy in inference
    mode and in training mode (batches of `batch_size`), and the inference-mode
    accuracy on the training windows (what model.evaluate would report).

    Use `.callback()` in fit; read `.curves` (name -> list per epoch) afterwards.
    """

    def __init__(self, x_train, y_train, x_test, y_test, batch_size: int, train_epochs=None):
        """train_epochs: the 1-based epochs at which to score the training windows too
        (None: every epoch); other epochs get NaN there — it is the costly pass."""
        self.data = (x_train, y_train, x_test, y_test)
        self.batch_size = batch_size
        self.train_epochs = None if train_epochs is None else set(train_epochs)
        self.curves = {"test_inference": [], "test_training_mode": [], "train_inference": []}

    def callback(self):
        return _EpochCurves(self)


class _EpochCurves(keras.callbacks.Callback):
    """ModeAccuracy's callback: the three accuracies after each epoch, appended to owner.curves."""

    def __init__(self, owner: ModeAccuracy):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        owner = self.owner
        x_tr, y_tr, x_te, y_te = owner.data
        owner.curves["test_inference"].append(accuracy(self.model, x_te, y_te, batch_size=512, compiled=True))
        owner.curves["test_training_mode"].append(
            accuracy(self.model, x_te, y_te, training=True, batch_size=owner.batch_size, compiled=True))
        wanted = owner.train_epochs is None or (epoch + 1) in owner.train_epochs
        owner.curves["train_inference"].append(
            accuracy(self.model, x_tr, y_tr, batch_size=512, compiled=True) if wanted else float("nan"))


# ----------------------------------------------------------------------------- calling it
def probabilities(model, x: np.ndarray, *, training: bool = False, batch_size: int = 512,
                  keep_statistics: bool = True) -> np.ndarray:
    """P(fault) for each window, (N,): helpers.training.predict_proba through its compiled
    call (so batches of 1 are cheap), flattened. In training mode the result depends on
    batch_size; keep_statistics=False leaves the moving statistics as Keras leaves them
    (every training=True call updates them)."""
    return predict_proba(model, np.asarray(x, np.float32), training=training, batch_size=batch_size,
                         compiled=True, keep_statistics=keep_statistics).reshape(-1)


def layer_output(model, layer_name: str, x: np.ndarray, *, training: bool) -> np.ndarray:
    """The output of one named layer for inputs x (one call, x is one batch):
    (N, ...) as the layer emits it — (N, T', F) for a conv BN, (N, F) for a dense BN."""
    feature_model = keras.Model(model.input, model.get_layer(layer_name).output)
    with preserved_bn_state(model):  # a training-mode call would move them
        return np.asarray(feature_model(np.asarray(x, np.float32), training=training))


def layer_input(model, layer_name: str, x: np.ndarray) -> np.ndarray:
    """The input of one named layer in inference mode: (N, ...)."""
    feature_model = keras.Model(model.input, model.get_layer(layer_name).input)
    return np.asarray(feature_model(np.asarray(x, np.float32), training=False))


def batch_of_one_bn_outputs(model, layer_name: str, windows: np.ndarray) -> np.ndarray:
    """BN layer `layer_name` in training mode, each window fed alone (batch of 1).

    windows (K, T, C) -> (K, ...) stacked outputs of the K separate calls.
    """
    return np.concatenate([layer_output(model, layer_name, w[None], training=True) for w in windows])


# ----------------------------------------------------------------------------- variants
def _chain(model, keep) -> "object":
    inputs = keras.Input(shape=model.input_shape[1:], name="window")
    h = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not keep(layer):
            continue
        h = layer(h)
    return keras.Model(inputs, h, name=f"{model.name}_variant")


def without_batchnorm(model):
    """The same trained layers (shared weights) with every BatchNormalization skipped.

    This is "BN is simply not used at test time" taken literally.
    """
    return _chain(model, lambda layer: not isinstance(layer, keras.layers.BatchNormalization))


def fold_batchnorm(model):
    """A copy where each BN (inference mode) is folded into the Conv1D/Dense before it.

    BN(z) = gamma (z - mean) / sqrt(var + eps) + beta with z = x W (+ b) is again
    linear: W' = W * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps)
    per output channel. The returned model has no BN layer and the same outputs
    (up to float32 rounding). Only Conv1D/Dense -> BN pairs are folded.
    """
    layers_in = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    inputs = keras.Input(shape=model.input_shape[1:], name="window")
    h = inputs
    i = 0
    while i < len(layers_in):
        layer = layers_in[i]
        nxt = layers_in[i + 1] if i + 1 < len(layers_in) else None
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Dense)) and isinstance(
                nxt, keras.layers.BatchNormalization):
            weights = layer.get_weights()
            kernel = weights[0].astype(np.float64)
            bias = weights[1].astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
            gamma = np.asarray(nxt.gamma, np.float64) if nxt.scale else 1.0
            beta = np.asarray(nxt.beta, np.float64) if nxt.center else 0.0
            mean = np.asarray(nxt.moving_mean, np.float64)
            var = np.asarray(nxt.moving_variance, np.float64)
            scale = gamma / np.sqrt(var + nxt.epsilon)
            config = layer.get_config()
            config.update(use_bias=True, name=f"{layer.name}_folded")
            folded = type(layer).from_config(config)
            h = folded(h)
            folded.set_weights([(kernel * scale).astype(np.float32),
                                ((bias - mean) * scale + beta).astype(np.float32)])
            i += 2
            continue
        h = layer(h)
        i += 1
    return keras.Model(inputs, h, name=f"{model.name}_folded")


def count_batchnorm(model) -> int:
    return sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)


def set_bn_trainable(model, trainable: bool, names: Sequence[str] | None = None) -> list[str]:
    """Set `trainable` on the model's BN layers (all, or those named); returns the names changed."""
    changed = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and (names is None or layer.name in names):
            layer.trainable = trainable
            changed.append(layer.name)
    return changed


def copy_model(model, *, bn_trainable: bool = True):
    """An independent copy (same architecture and weights, moving statistics included),
    its BN layers set to `bn_trainable`, compiled like conv1d_bn_model (with the model's own loss)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    set_bn_trainable(clone, bn_trainable)
    loss = getattr(model, "loss", None) or "binary_crossentropy"
    clone.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    return clone


def moving_statistics_change(before: list, after: list) -> float:
    """Largest |change| of any moving mean/variance between two moving_statistics() snapshots."""
    return float(max(np.max(np.abs(a - b)) for pa, pb in zip(before, after) for a, b in zip(pa, pb)))


def subclassed_chain(model, *, bn_training: bool | None = None):
    """A subclassed keras.Model applying the trained model's layers in order (shared weights).

    bn_training=None: the BN layers are called without a `training` argument, so
    Keras passes on whatever the outer call received (model(x, training=...)).
    bn_training=True/False: the BN layers are called with that value hard-coded,
    overriding the outer call — a common bug in hand-written models.
    """

    chain = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    return Chain(chain, bn_training)


class Chain(keras.Model):
    """subclassed_chain's model: the layers in order, BN called with a hard-coded flag or none."""

    def __init__(self, layers_, bn_flag):
        super().__init__(name=f"subclassed_bn_{bn_flag}")
        self.chain = layers_
        self.bn_flag = bn_flag

    def call(self, x):  # note: no `training` argument at all
        for layer in self.chain:
            if isinstance(layer, keras.layers.BatchNormalization) and self.bn_flag is not None:
                x = layer(x, training=self.bn_flag)
            else:
                x = layer(x)
        return x


# ----------------------------------------------------------------------------- deployment
def streaming_predictor(model):
    """A tf.function that maps one window (1, T, C) to P(fault) (1, 1), BN in inference mode.

    The input signature is fixed, so it is traced once and every call reuses the graph.
    """
    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec], autograph=False)
    def predict_one(window):
        return model(window, training=False)

    return predict_one


def stream_latency(predict_one, windows: np.ndarray, *, warmup: int = 5) -> dict:
    """Feed windows (K, T, C) one at a time through predict_one, as a live stream would.

    Returns probabilities (K,), seconds (K,) per window (including the hand-back
    to NumPy), and median_ms / p95_ms.
    """
    windows = np.asarray(windows, np.float32)
    for w in windows[:warmup]:
        np.asarray(predict_one(tf.constant(w[None])))
    probs, seconds = [], []
    for w in windows:
        t0 = time.perf_counter()
        p = np.asarray(predict_one(tf.constant(w[None])))
        seconds.append(time.perf_counter() - t0)
        probs.append(float(p.reshape(-1)[0]))
    seconds = np.asarray(seconds)
    return {"probabilities": np.asarray(probs), "seconds": seconds,
            "median_ms": float(np.median(seconds) * 1e3), "p95_ms": float(np.percentile(seconds, 95) * 1e3)}


def interleaved_stream_latency(predictors: dict, windows: np.ndarray, *, warmup: int = 5) -> dict:
    """stream_latency for several predictors at once, taking turns window by window.

    predictors: name -> predict_one. On a shared, noisy machine interleaving makes
    the comparison fair: a burst of load hits every predictor alike.
    Returns name -> the stream_latency() dict.
    """
    windows = np.asarray(windows, np.float32)
    for fn in predictors.values():
        for w in windows[:warmup]:
            np.asarray(fn(tf.constant(w[None])))
    probs = {name: [] for name in predictors}
    seconds = {name: [] for name in predictors}
    for w in windows:
        for name, fn in predictors.items():
            t0 = time.perf_counter()
            p = np.asarray(fn(tf.constant(w[None])))
            seconds[name].append(time.perf_counter() - t0)
            probs[name].append(float(p.reshape(-1)[0]))
    out = {}
    for name in predictors:
        sec = np.asarray(seconds[name])
        out[name] = {"probabilities": np.asarray(probs[name]), "seconds": sec,
                     "median_ms": float(np.median(sec) * 1e3), "p95_ms": float(np.percentile(sec, 95) * 1e3)}
    return out


def batched_ms_per_window(model, windows: np.ndarray, *, batch_size: int = 256, repeats: int = 3) -> float:
    """Best-of-`repeats` milliseconds per window when windows (K, T, C) go through a
    tf.function in batches of batch_size (throughput, not latency)."""
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    windows = np.asarray(windows, np.float32)
    fn(tf.constant(windows[:batch_size])).numpy()  # trace
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(windows), batch_size):
            fn(tf.constant(windows[i:i + batch_size])).numpy()
        best = min(best, time.perf_counter() - t0)
    return float(best / len(windows) * 1e3)


# ----------------------------------------------------------------------------- an accuracy is a sample
def accuracy_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of an accuracy p measured on n examples (95 % for z = 1.96): where the
    accuracy over all data of the same kind lies, given this one test set (helpers.workbook.spread.wilson_interval)."""
    from .workbook.spread import wilson_interval
    return wilson_interval(p, n, z)


# ----------------------------------------------------------------------------- widget
MODES = ("inference", "training")


def batch_mates(n: int, window: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of a batch of `batch_size` windows out of n: `window` first, then
    batch_size - 1 others drawn without replacement (seeded by seed and window)."""
    if not 0 <= window < n or not 1 <= batch_size <= n:
        raise ValueError(f"need 0 <= window < {n} and 1 <= batch_size <= {n}")
    rng = np.random.default_rng([seed, window])
    others = rng.permutation(np.delete(np.arange(n), window))[:batch_size - 1]
    return np.concatenate([[window], others]).astype(int)


def window_in_batch(model, x: np.ndarray, y: np.ndarray, window: int, batch_size: int, mode: str,
                    seed: int = 0) -> dict:
    """Predict `window` together with batch_size - 1 batch-mates in the given BN mode.

    x (N, T, C), y (N,). Returns {"probability": of the chosen window, "batch": the
    batch's probabilities (batch_size,), "labels": (batch_size,), "rank": how many
    batch-mates score below the window, "indices": (batch_size,)}.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    idx = batch_mates(len(x), window, batch_size, seed)
    with preserved_bn_state(model):
        probs = compiled_call(model, mode == "training", x.shape[1:])(np.asarray(x[idx], np.float32)).numpy().reshape(-1)
    return {"probability": float(probs[0]), "batch": probs, "labels": np.asarray(y)[idx],
            "rank": int(np.sum(probs[1:] < probs[0])), "indices": idx}


def plot_window_in_batch(model, x: np.ndarray, y: np.ndarray, window: int, batch_size: int, mode: str,
                         seed: int = 0, reference: float | None = None):
    """Draw where the chosen window's P(fault) sits among its batch-mates (one figure).

    reference: the window's probability in inference mode, drawn as a dashed
    line so a learner sees training mode move away from it.
    Returns the window_in_batch() dict.
    """
    import matplotlib.pyplot as plt
    from .workbook.plotting import figure
    out = window_in_batch(model, x, y, window, batch_size, mode, seed)
    label = "fault" if y[window] == 1 else "normal"
    fig, ax = figure(finding=f"window {window} ({label}): P(fault) = {out['probability']:.3f} "
                             f"in {mode} mode, batch of {batch_size}", height=2.6)
    mates, mate_labels = out["batch"][1:], out["labels"][1:]
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=len(mates))
    for cls, colour, name in ((0, "tab:blue", "normal batch-mates"), (1, "tab:red", "fault batch-mates")):
        sel = mate_labels == cls
        if sel.any():
            ax.scatter(mates[sel], jitter[sel], s=14, alpha=0.6, color=colour, label=name)
    ax.scatter([out["probability"]], [0], marker="*", s=320, color="black", zorder=5,
               label=f"window {window}: above {out['rank']} of {len(mates)} mates")
    if reference is not None:
        ax.axvline(reference, ls="--", color="grey", lw=1, label=f"inference-mode value {reference:.3f}")
    ax.axvline(0.5, color="k", lw=0.6)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.6, 0.6)
    ax.set_yticks([])
    ax.set_xlabel("P(fault) predicted for each window in the batch (probability)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2, fontsize=8)
    plt.show()
    return out


def window_in_batch_table(model, x: np.ndarray, y: np.ndarray, window: int, batch_size: int, mode: str,
                          seed: int = 0, bins: int = 10, reference: float | None = None) -> Table:
    """The widget's view: where the chosen window's P(fault) sits among its batch-mates,
    as a histogram table (one row per probability bin, the window's bin highlighted).

    Cheap to draw (no figure), so a widget built on it responds at once even on a
    busy machine. reference: the window's inference-mode probability, shown in the title.
    """
    out = window_in_batch(model, x, y, window, batch_size, mode, seed)
    mates, labels = out["batch"][1:], out["labels"][1:]
    edges = np.linspace(0.0, 1.0, bins + 1)
    chosen_bin = min(int(out["probability"] * bins), bins - 1)
    rows = []
    for b in range(bins):
        upper = edges[b + 1] if b < bins - 1 else 1.0 + 1e-9
        inside = (mates >= edges[b]) & (mates < upper)
        n_normal, n_fault = int(np.sum(inside & (labels == 0))), int(np.sum(inside & (labels == 1)))
        marker = f"◀ window {window}" if b == chosen_bin else ""
        rows.append([f"{edges[b]:.1f}–{edges[b + 1]:.1f}", n_normal, n_fault,
                     "▪" * n_normal + "▴" * n_fault if batch_size <= 64 else
                     "▪" * int(np.ceil(n_normal / 4)) + "▴" * int(np.ceil(n_fault / 4)), marker])
    truth = "fault" if y[window] == 1 else "normal"
    ref = f"; inference-mode value {reference:.3f}" if reference is not None else ""
    title = (f"window {window} ({truth}), {mode} mode, batch of {batch_size}: P(fault) = {out['probability']:.3f}, "
             f"above {out['rank']} of {len(mates)} batch-mates{ref}")
    bar_note = "batch-mates (▪ normal, ▴ fault" + (")" if batch_size <= 64 else ", one mark per 4)")
    return Table(["P(fault) bin", "normal mates", "fault mates", bar_note, "chosen window"], rows[::-1],
                 title=title, highlight=[bins - 1 - chosen_bin])


def accuracy_table(rows: Sequence[tuple[str, str, float]], title: str) -> Table:
    """A Table of (how the model is called, what BN does, test accuracy)."""
    return Table(["how the model is called", "what BN does", "test accuracy"], [list(r) for r in rows],
                 title=title, highlight=[0])


# ----------------------------------------------------------------------------- batch of one, four ways


def batch1_accuracies(model, x: np.ndarray, y: np.ndarray) -> dict:
    """Test accuracy of a trained model called the ways section 3 compares (x (N, T, C), y (N,)):
    inference mode; for a model with BN also training mode at batch 1 (every BN on the sample's own
    statistics: a dense BN then outputs β) and instance norm (the conv BNs in training mode at batch 1,
    the dense BN kept in inference mode with trainable=False)."""
    acc = {"acc_inference": accuracy(model, x, y)}
    if count_batchnorm(model):
        acc["acc_training_batch1"] = accuracy(model, x, y, training=True, batch_size=1, compiled=True)
        conv_only = copy_model(model)
        set_bn_trainable(conv_only, False, names=["bn_dense"])
        acc["acc_instance_norm_batch1"] = accuracy(conv_only, x, y, training=True, batch_size=1, compiled=True)
    return acc
