"""The framework baseline's row is named for what its adapter actually times."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from onnxforge.adapters import ADAPTERS, get_adapter
from onnxforge.benchmark import baseline_name


def test_every_framework_has_its_own_baseline_name() -> None:
    names = {framework: get_adapter(framework).baseline_name for framework in ADAPTERS}
    assert all(names.values())  # a new adapter needs an honest name for what it times
    assert len(set(names.values())) == len(names)
    assert [baseline_name(f) for f in ADAPTERS] == list(names.values())
    assert [baseline_name(f) for f in ("pytorch", "keras", "onnx")] == [
        "pytorch-eager",
        "keras-tf-function",
        "onnx-original",
    ]


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_the_keras_baseline_times_a_tf_function_not_eager_calls() -> None:
    """If the adapter ever times eager calls, `keras-tf-function` would be a wrong name."""
    import tensorflow as tf

    adapter = get_adapter("keras")
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    call = adapter.latency_callable(model, np.zeros((3, 4), dtype=np.float32))
    captured = [cell.cell_contents for cell in call.__closure__ or ()]
    assert any(isinstance(c, tf.types.experimental.GenericFunction) for c in captured), captured
    assert call().shape == (3, 2)
