"""Keras architectures that recipes can name: the same small CNN as Sequential and Functional."""

from __future__ import annotations

from typing import Any

import keras


def keras_cnn(
    sample_shape: tuple[int, ...], num_classes: int, channels: int = 16, hidden: int = 64
) -> Any:
    """Conv-Conv-Pool-Dense-Dense as a keras.Sequential (channels last: H, W, C)."""
    return keras.Sequential(
        [
            keras.Input(sample_shape, name="input"),
            keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(channels * 2, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="keras_cnn",
    )


def keras_cnn_functional(
    sample_shape: tuple[int, ...], num_classes: int, channels: int = 16, hidden: int = 64
) -> Any:
    """The same network built with the Functional API, with a residual-style branch."""
    inputs = keras.Input(sample_shape, name="input")
    first = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(inputs)
    second = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(first)
    merged = keras.layers.Concatenate()([first, second])
    pooled = keras.layers.Flatten()(keras.layers.MaxPooling2D()(merged))
    hidden_layer = keras.layers.Dense(hidden, activation="relu")(pooled)
    return keras.Model(
        inputs, keras.layers.Dense(num_classes)(hidden_layer), name="keras_cnn_functional"
    )


ARCHITECTURES = {"keras_cnn": keras_cnn, "keras_cnn_functional": keras_cnn_functional}
