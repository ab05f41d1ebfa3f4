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
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(parent)), keep_io_types=settings.keep_io_types)
    # onnxruntime 1.32's converter appends the input Casts after the nodes that read them; ONNX
    # Runtime sorts on load, but the file fails onnx.checker ("Nodes in a graph must be
    # topologically sorted"): sort it so the file is valid ONNX.
    sorted_model = OnnxModel(model)
    sorted_model.topological_sort()
    onnx.save(sorted_model.model, str(out_path))
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
        # Measured on onnxruntime 1.32's CPU provider (no GPU here; it runs these fp16 graphs),
        # spreads max / mean: digits_cnn 0.00053-0.00074 / 0.00013-0.00022, digits_keras 0.00098
        # / 0.00017, text_transformer 0.0044 / 0.00031. ~4.5x over the worst, as GPU kernels
        # round differently.
        Tolerance(atol=0.02, mean_atol=0.0015, min_top1_agreement=0.99),
        "gpu",
        "float16 weights and compute (no CPU kernels)",
    )
)
