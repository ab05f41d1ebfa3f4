"""Shared steps of the int8 variants: ONNX Runtime's pre-processing and calibration data."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from onnxforge.inputs import Features, count, named, take


@contextlib.contextmanager
def prepared_copy(parent: Path) -> Iterator[tuple[Path, str]]:
    """The parent after ONNX Runtime's quantization pre-processing, in a scratch folder, and a
    note of how it was pre-processed."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "prepared.onnx"
        yield target, pre_process(parent, target)


def pre_process(source: Path, target: Path) -> str:
    """quant_pre_process; retried without symbolic shape inference, which fails on some graphs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # When symbolic shape inference fails, ORT saves `sym_shape_infer_temp.onnx` plus a
        # `<uuid>.data` file into the working directory and leaves them: run it from a scratch one.
        with contextlib.chdir(target.parent):
            quant_pre_process(str(source.resolve()), str(target.resolve()))
        return "pre-processed"
    except Exception as error:  # noqa: BLE001 - e.g. 'Incomplete symbolic shape inference' on a TransformerEncoder export
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return f"pre-processed without symbolic shape inference ({str(error)[:120]})"


class ArrayReader:
    """A CalibrationDataReader over the pipeline's inputs, `batch_size` samples at a time."""

    def __init__(self, names: list[str], features: Features, batch_size: int = 16) -> None:
        self.names, self.features, self.batch_size = names, features, batch_size
        self._starts: Iterator[int] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._starts is None:
            self._starts = iter(range(0, count(self.features), self.batch_size))
        start = next(self._starts, None)
        if start is None:
            return None
        return named(take(self.features, slice(start, start + self.batch_size)), self.names)

    def rewind(self) -> None:
        self._starts = None

    # CalibrationDataReader's iteration protocol, without importing onnxruntime at import time.
    def __iter__(self) -> ArrayReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch


def graph_input_names(path: Path) -> list[str]:
    """The model's graph inputs that are not initializers, in order."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]
