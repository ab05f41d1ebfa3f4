"""fp16: half-precision weights and compute, float32 inputs and outputs kept. A GPU variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxforge.variants import Tolerance, VariantSettings, VariantSpec, register


class Fp16Settings(VariantSettings):
    """Keep float32 graph inputs and outputs so callers need no change."""

    keep_io_types: bool = True


def make_fp16(parent: Path, settings: Fp16Settings, out_path: Path, _: np.ndarray) -> str:
    """onnxruntime.transformers.float16.convert_float_to_float16."""
    import onnx
    import onnxruntime
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(parent)), keep_io_types=settings.keep_io_types)
    onnx.save(model, str(out_path))
    return (
        f"onnxruntime.transformers.float16 onnxruntime {onnxruntime.__version__} "
        f"(keep_io_types={settings.keep_io_types})"
    )


register(
    VariantSpec(
        "fp16",
        "simplified",
        Fp16Settings,
        make_fp16,
        Tolerance(atol=0.05, mean_atol=0.01, min_top1_agreement=0.99),
        "gpu",
        "float16 weights and compute (no CPU kernels)",
    )
)
