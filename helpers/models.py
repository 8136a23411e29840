"""Small model builders used across lessons (fast on a CPU)."""
from __future__ import annotations

from typing import Sequence

NORMS = ("batch", "group", "layer", "none")


def norm_layer(kind: str, *, groups: int = 4, momentum: float = 0.99, name: str | None = None, **bn_kwargs):
    """A normalization layer by name: "batch", "group", "layer" or "none" (identity).

    Extra keywords go to BatchNormalization (e.g. renorm=True, synchronized=True).
    """
    import keras
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
    import keras
    from keras import layers
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
    import keras
    from keras import layers
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
    import keras
    inputs = keras.Input(shape=(input_dim,))
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(inputs)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model, optimizer="adam", learning_rate: float = 1e-3, **kwargs):
    """Compile with sparse categorical cross-entropy and accuracy."""
    import keras
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}})
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"], **kwargs)
    return model
