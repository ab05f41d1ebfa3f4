"""Shared steps of the int8 variants: ONNX Runtime's pre-processing and calibration data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def pre_process(source: Path, target: Path) -> str:
    """quant_pre_process; retried without symbolic shape inference, which fails on some graphs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
        return "pre-processed"
    except Exception as error:  # noqa: BLE001 - STACK.md: 'Incomplete symbolic shape inference'
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return f"pre-processed without symbolic shape inference ({str(error)[:120]})"


class ArrayReader:
    """A CalibrationDataReader over an array, `batch_size` samples at a time."""

    def __init__(self, input_name: str, features: np.ndarray, batch_size: int = 16) -> None:
        self.input_name, self.features, self.batch_size = input_name, features, batch_size
        self._batches: Iterator[np.ndarray] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = iter(
                self.features[start : start + self.batch_size]
                for start in range(0, len(self.features), self.batch_size)
            )
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = None

    # CalibrationDataReader's iteration protocol, without importing onnxruntime at import time.
    def __iter__(self) -> ArrayReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def first_input_name(path: Path) -> str:
    """The model's first graph input that is not an initializer."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)
