"""int8-dynamic: int8 weights, activations quantized at run time (ONNX Runtime quantize_dynamic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from onnxforge.variants import Tolerance, VariantSettings, VariantSpec, register
from onnxforge.variants.quantization import prepared_copy


class DynamicSettings(VariantSettings):
    """Weight type and per-channel weights."""

    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    per_channel: bool = False


def make_int8_dynamic(
    parent: Path, settings: DynamicSettings, out_path: Path, _: np.ndarray
) -> str:
    """Pre-process, then quantize_dynamic."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with prepared_copy(parent) as (prepared, note):
        quantize_dynamic(
            str(prepared),
            str(out_path),
            weight_type=QuantType[settings.weight_type],
            per_channel=settings.per_channel,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return (
        f"onnxruntime.quantization.quantize_dynamic onnxruntime {onnxruntime.__version__} "
        f"(weight_type={settings.weight_type}, per_channel={settings.per_channel}; {note})"
    )


register(
    VariantSpec(
        "int8-dynamic",
        "simplified",
        DynamicSettings,
        make_int8_dynamic,
        Tolerance(atol=1.0, mean_atol=0.2, min_top1_agreement=0.97),
        "any",
        "int8 weights, activations quantized at run time",
        quantized=True,
    )
)
