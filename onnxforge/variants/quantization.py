"""Shared steps of the int8 variants: ONNX Runtime's pre-processing and calibration data."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from onnxforge.inputs import Features, count, named, take
from onnxforge.variants import VariantSettings


class QuantizedFrom(VariantSettings):
    """Which float graph an int8 variant quantizes: onnxsim's output (the default) or
    ort-optimized's, whose transformer fusions (Attention, SkipLayerNormalization) then stay in
    the quantized graph."""

    source: Literal["simplified", "ort-optimized"] = "simplified"


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


# DequantizeLinear takes `axis` (per-channel scales) from opset 13 on: ORT 1.32's quantize_static
# writes it on older models too, and ONNX Runtime then refuses the file (`INVALID_GRAPH ...
# Unrecognized attribute: axis for operator DequantizeLinear`, measured on an opset-9 CNN).
PER_CHANNEL_OPSET = 13


class OpsetUpgradeFailed(Exception):
    """onnx.version_converter could not give an equivalent model at the wanted opset."""


def onnx_opset(path: Path) -> int:
    """The model's default-domain (ai.onnx) opset."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(source: Path, opset: int, target: Path, samples: Features) -> None:
    """Write `source` converted to `opset` by onnx.version_converter to `target`, after checking
    that it passes the full checker and gives the same outputs on real samples (the converter
    keeps some ops whose meaning changed, e.g. Hardmax's axis in opset 13)."""
    import onnx

    try:
        converted = onnx.version_converter.convert_version(onnx.load(str(source)), opset)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as error:  # noqa: BLE001 - the converter and checker raise several types
        raise OpsetUpgradeFailed(" ".join(str(error).split())[:600]) from None
    onnx.save(converted, str(target))
    before, after = _outputs(source, samples), _outputs(target, samples)
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        scale = float(np.abs(old).max()) if old.size else 0.0
        if old.shape != new.shape or not np.allclose(new, old, rtol=1e-4, atol=1e-5 * scale):
            raise OpsetUpgradeFailed(
                f"the opset-{opset} model's output {index} differs from the original's on real samples"
            )


def _outputs(path: Path, samples: Features) -> list[np.ndarray]:
    """Every output of `path` on ONNX Runtime's CPU provider for a batch of real samples."""
    import onnx
    import onnxruntime as ort

    from onnxforge.variants.checks import check_batch, sample_feed

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batch = check_batch(onnx.load(str(path), load_external_data=False))
        return session.run(None, sample_feed(session, samples, batch))
    except Exception as error:  # noqa: BLE001 - ORT's errors derive from Exception
        raise OpsetUpgradeFailed(" ".join(str(error).split())[:600]) from None


def per_channel_source(
    parent: Path, per_channel: bool, scratch: Path, samples: Features
) -> tuple[Path, bool, tuple[str, ...]]:
    """The model to quantize and whether per-channel weights stay on: the parent as it is, the
    parent upgraded to opset 13 when per-channel needs it, or the parent with per_channel turned
    off when it cannot be upgraded; with a note of what was changed and why."""
    import onnx

    opset = onnx_opset(parent)
    if not per_channel or opset >= PER_CHANNEL_OPSET:
        return parent, per_channel, ()
    target = scratch / f"opset{PER_CHANNEL_OPSET}.onnx"
    try:
        upgrade_opset(parent, PER_CHANNEL_OPSET, target, samples)
    except OpsetUpgradeFailed as error:
        return (
            parent,
            False,
            (
                f"per_channel turned off: per-channel weights need DequantizeLinear's axis "
                f"(opset {PER_CHANNEL_OPSET}), the model is opset {opset}, and onnx.version_converter "
                f"{onnx.__version__} could not upgrade it: {error}",
            ),
        )
    return (
        target,
        True,
        (
            f"opset {opset} upgraded to {PER_CHANNEL_OPSET} by onnx.version_converter "
            f"{onnx.__version__} (per-channel weights need DequantizeLinear's axis); checked "
            "against the original on real samples",
        ),
    )


def graph_input_names(path: Path) -> list[str]:
    """The model's graph inputs that are not initializers, in order."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]
