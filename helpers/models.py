"""The workbook's model builders, one family (fast on a CPU; lesson 02 writes its own on the page):

    norm_layer(kind)            a normalization layer by name: batch, group, layer or none
    small_cnn(norm)             the digits CNN: Conv-Norm-ReLU blocks, Dense-Norm-ReLU, softmax (lessons 01, 02, 04, 08)
    sweep_cnn(norm, seed)       small_cnn seeded, with Batch Renorm variants (lesson 02's sweep default, unit tests)
    mlp / softmax_regression    dense models (lessons 01 and 05)
    regularized_cnn(...)        small_cnn with dropout before or after the last BN, L2, the norm as an option (lesson 04)
    conv1d_bn_model(T, C)       the window classifier, Conv1D-norm-ReLU blocks, compiled (lesson 03, 08's example)
    compile_classifier(model)   sparse categorical cross-entropy and accuracy
"""
from __future__ import annotations

from typing import Sequence

from .workbook.frameworks import keras

NORMS = ("batch", "group", "layer", "none")
# Batch renormalization's final clipping in Ioffe 2017 (sec. 4.1): r in [1/3, 3], |d| <= 5.
RENORM_CLIPPING = {"rmin": 1.0 / 3.0, "rmax": 3.0, "dmax": 5.0}


def norm_layer(kind: str, *, groups: int = 4, momentum: float = 0.99, name: str | None = None, **bn_kwargs):
    """A normalization layer by name: "batch", "group", "layer" or "none" (identity).

    Extra keywords go to BatchNormalization (e.g. renorm=True, synchronized=True).
    """
    if kind == "batch":
        return keras.layers.BatchNormalization(momentum=momentum, name=name, **bn_kwargs)
    if kind == "group":
        return keras.layers.GroupNormalization(groups=groups, name=name)
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    if kind == "none":
        return keras.layers.Identity(name=name)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def small_cnn(norm: str = "batch", *, input_shape: Sequence[int] = (8, 8, 1), filters: Sequence[int] = (16, 32),
              dense: int = 64, num_classes: int = 10, momentum: float = 0.99, groups: int = 4,
              name: str | None = None, **bn_kwargs):
    """Conv(3x3)-Norm-ReLU blocks (2x2 max-pool after the first), then Dense-Norm-ReLU and softmax.

    Input (N, 8, 8, 1) -> probabilities (N, num_classes). Normalization sits
    before each activation, as in the BN paper. Uncompiled.
    """
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape))
    h = inputs
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, padding="same", use_bias=(norm == "none"), name=f"conv{i}")(h)
        h = norm_layer(norm, groups=groups, momentum=momentum, name=f"norm{i}", **bn_kwargs)(h)
        h = layers.ReLU()(h)
        if i == 0:
            h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(dense, use_bias=(norm == "none"), name="dense")(h)
    h = norm_layer(norm, groups=groups, momentum=momentum, name="norm_dense", **bn_kwargs)(h)
    h = layers.ReLU()(h)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs, name=name or f"cnn_{norm}")


def mlp(hidden: Sequence[int] = (64,), *, input_dim: int = 64, num_classes: int = 10, norm: str = "none",
        momentum: float = 0.99, name: str | None = None, **bn_kwargs):
    """Dense-[Norm]-ReLU layers then softmax: (N, input_dim) -> (N, num_classes). Uncompiled."""
    layers = keras.layers
    inputs = keras.Input(shape=(input_dim,))
    h = inputs
    for i, width in enumerate(hidden):
        h = layers.Dense(width, use_bias=(norm == "none"), name=f"dense{i}")(h)
        if norm != "none":
            h = norm_layer(norm, momentum=momentum, name=f"norm{i}", **bn_kwargs)(h)
        h = layers.ReLU()(h)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(h)
    return keras.Model(inputs, outputs, name=name or f"mlp_{norm}")


def softmax_regression(*, input_dim: int = 64, num_classes: int = 10, name: str = "softmax_regression"):
    """A single Dense softmax layer: the convex model lesson 01 measures gradients on."""
    inputs = keras.Input(shape=(input_dim,))
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(inputs)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model, optimizer="adam", learning_rate: float = 1e-3, **kwargs):
    """Compile with sparse categorical cross-entropy and accuracy."""
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"], **kwargs)
    return model


def sweep_cnn(norm: str, seed: int):
    """small_cnn, seeded, for `norm` in "batch", "group", "layer",
    "none", "renorm", "renorm_clipped". Lesson 02 builds its models on the page instead and
    passes its builder to Sweep; this one is the default and what the unit tests use."""
    keras.utils.set_random_seed(seed)
    if norm == "renorm":
        return small_cnn("batch", renorm=True, name="cnn_renorm")
    if norm == "renorm_clipped":
        return small_cnn("batch", renorm=True, renorm_clipping=dict(RENORM_CLIPPING), name="cnn_renorm_clipped")
    return small_cnn(norm)


CONV1D_NORMS = ("batch", "none", "instance")   # conv1d_bn_model's normalizations


def conv1d_bn_model(window_length: int, channels: int, *, filters: Sequence[int] = (8, 16, 16),
                    kernel_size: int = 5, dense: int = 16, momentum: float = 0.9,
                    learning_rate: float = 1e-3, classes: int = 1, norm: str = "batch", name: str = "conv1d_bn"):
    """Lessons 03 and 08's window classifier: three Conv1D-norm-ReLU blocks (max-pool 2 after the first
    two), global average pooling, Dense-norm-ReLU, and the output. Compiled (Adam; binary cross-entropy
    for classes=1, sparse categorical cross-entropy otherwise).

    Input (N, window_length, channels) -> P("fault") (N, 1) for classes=1 (sigmoid), else
    class probabilities (N, classes) (softmax).
    norm: "batch" — BatchNormalization(momentum) after every Conv1D and the hidden Dense, which then
    have no bias (BN's beta replaces it); "none" — no normalization, biases on; "instance" — instance
    normalization (GroupNormalization with one group per channel) after every Conv1D, none after the Dense.
    """
    layers = keras.layers
    if norm not in CONV1D_NORMS:
        raise ValueError(f"norm must be one of {CONV1D_NORMS}, got {norm!r}")
    inputs = keras.Input(shape=(window_length, channels), name="window")
    h = inputs
    for i, f in enumerate(filters):
        h = layers.Conv1D(f, kernel_size, padding="same", use_bias=norm != "batch", name=f"conv{i}")(h)
        if norm == "batch":
            h = layers.BatchNormalization(momentum=momentum, name=f"bn{i}")(h)
        elif norm == "instance":
            h = layers.GroupNormalization(groups=-1, name=f"in{i}")(h)
        h = layers.ReLU(name=f"relu{i}")(h)
        if i < 2:
            h = layers.MaxPooling1D(2, name=f"pool{i}")(h)
    h = layers.GlobalAveragePooling1D(name="average_over_time")(h)
    h = layers.Dense(dense, use_bias=norm != "batch", name="dense")(h)
    if norm == "batch":
        h = layers.BatchNormalization(momentum=momentum, name="bn_dense")(h)
    h = layers.ReLU(name="relu_dense")(h)
    if classes == 1:
        outputs, loss = layers.Dense(1, activation="sigmoid", name="fault")(h), "binary_crossentropy"
    else:
        outputs, loss = layers.Dense(classes, activation="softmax", name="label")(h), "sparse_categorical_crossentropy"
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def regularized_cnn(*, dropout: str = "none", rate: float = 0.5, l2: float = 0.0, momentum: float = 0.99,
                    filters=(16, 32), dense: int = 64, norm: str = "batch", groups: int = 4, name: str | None = None):
    """Lesson 04's model: small_cnn's architecture with optional dropout and L2, and the normalization as an option.

    dropout: "none"; "before" = Dropout on the flattened features, i.e. before the
    Dense -> BN block (Li et al. 2019's disharmony); "after" = Dropout after the last
    BN + ReLU, just before the classifier. l2: L2 factor on every kernel feeding a norm layer.
    norm: "batch" (BatchNormalization, `momentum`), "group" (GroupNormalization with `groups`
    groups, no batch statistics: the same in training and inference mode) or "none" (no
    normalization; the convolutions and the dense layer then get a bias). The norm layers are
    named norm0, norm1, norm_dense in every variant.
    Input (N, 8, 8, 1) -> probabilities (N, 10). Uncompiled.
    """
    layers = keras.layers
    if dropout not in ("none", "before", "after"):
        raise ValueError(f"dropout must be 'none', 'before' or 'after', got {dropout!r}")
    if norm not in ("batch", "group", "none"):
        raise ValueError(f"norm must be 'batch', 'group' or 'none', got {norm!r}")
    if norm == "group" and any(c % groups for c in (*filters, dense)):
        raise ValueError(f"groups = {groups} must divide every layer's channels {(*filters, dense)}")
    reg = keras.regularizers.L2(l2) if l2 > 0 else None

    def normalize(h, layer_name):
        if norm == "batch":
            return layers.BatchNormalization(momentum=momentum, name=layer_name)(h)
        if norm == "group":
            return layers.GroupNormalization(groups=groups, name=layer_name)(h)
        return h

    inputs = keras.Input(shape=(8, 8, 1))
    h = inputs
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, padding="same", use_bias=norm == "none", kernel_regularizer=reg, name=f"conv{i}")(h)
        h = layers.ReLU()(normalize(h, f"norm{i}"))
        if i == 0:
            h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    if dropout == "before":
        h = layers.Dropout(rate, name="dropout")(h)
    h = layers.Dense(dense, use_bias=norm == "none", kernel_regularizer=reg, name="dense")(h)
    h = layers.ReLU()(normalize(h, "norm_dense"))
    if dropout == "after":
        h = layers.Dropout(rate, name="dropout")(h)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(h)
    suffix = "" if norm == "batch" else f"_{norm}norm"
    return keras.Model(inputs, outputs, name=name or f"cnn_dropout_{dropout}_l2_{l2:g}{suffix}")
