"""The quantize stage: ONNX Runtime pre-processing, then int8 dynamic quantization."""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxforge.recipe import QuantizeSpec
from onnxforge.records import ModelArtifact, VariantBuild, describe_onnx, write_atomically


def quantize_model(parent: ModelArtifact, spec: QuantizeSpec, out_dir: Path) -> VariantBuild:
    """Write `int8-dynamic.onnx`, or record the tool's error (never raises)."""
    if not spec.enabled:
        return VariantBuild(variant=spec.mode, artifact=None, reason="disabled in the recipe")
    import onnxruntime

    try:
        with tempfile.TemporaryDirectory() as scratch:
            prepared, prep_note = _pre_process(Path(parent.path), Path(scratch) / "prepared.onnx")
            path = write_atomically(
                out_dir / f"{spec.mode}.onnx", lambda temp: _quantize_dynamic(prepared, temp, spec)
            )
    except Exception as error:  # noqa: BLE001 - a variant that cannot be made is a result
        return VariantBuild(
            variant=spec.mode, artifact=None, reason=f"quantization failed: {error}"
        )
    producer = (
        f"onnxruntime.quantization.quantize_dynamic onnxruntime {onnxruntime.__version__} "
        f"(weight_type={spec.weight_type}, per_channel={spec.per_channel}; {prep_note})"
    )
    return VariantBuild(
        variant=spec.mode, artifact=describe_onnx(path, spec.mode, parent.variant, producer)
    )


def _pre_process(source: Path, target: Path) -> tuple[Path, str]:
    """quant_pre_process; retried without symbolic shape inference, which fails on some graphs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
        return target, "pre-processed"
    except Exception as error:  # noqa: BLE001 - STACK.md: 'Incomplete symbolic shape inference'
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return target, f"pre-processed without symbolic shape inference ({str(error)[:120]})"


def _quantize_dynamic(source: Path, target: Path, spec: QuantizeSpec) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType[spec.weight_type],
        per_channel=spec.per_channel,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
