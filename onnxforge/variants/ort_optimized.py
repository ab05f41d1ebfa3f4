"""ort-optimized: ONNX Runtime's offline graph optimizations saved to a file, plus the transformer
fusions of onnxruntime.transformers (attention, layer norm, GELU) for transformer models."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from onnxforge.variants import Tolerance, VariantSettings, VariantSpec, register

# Ops whose presence marks a transformer graph worth the onnxruntime.transformers fusions.
_TRANSFORMER_MARKERS = {"Softmax", "LayerNormalization"}


class OrtOptimizedSettings(VariantSettings):
    """Optimization level (extended stays portable across CPU builds) and transformer fusions."""

    level: Literal["basic", "extended", "all"] = "extended"
    transformer_fusions: Literal["auto", "on", "off"] = "auto"
    num_heads: int = Field(0, ge=0)  # 0: let the optimizer detect it
    hidden_size: int = Field(0, ge=0)


def _transformer_fusions(source: Path, target: Path, settings: OrtOptimizedSettings) -> str:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=settings.num_heads,
        hidden_size=settings.hidden_size,
        opt_level=0,
        use_gpu=False,
    )
    applied = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(target))
    return "fusions " + (
        ", ".join(f"{op} x{n}" for op, n in sorted(applied.items())) or "none applied"
    )


def _wants_fusions(path: Path, mode: str) -> bool:
    import onnx

    if mode != "auto":
        return mode == "on"
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    return _TRANSFORMER_MARKERS <= ops


def make_ort_optimized(
    parent: Path, settings: OrtOptimizedSettings, out_path: Path, _: np.ndarray
) -> str:
    """Transformer fusions (when the graph has attention), then ORT's offline optimizer."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    with tempfile.TemporaryDirectory() as scratch:
        source, fusion_note = parent, "no transformer fusions"
        if _wants_fusions(parent, settings.transformer_fusions):
            source = Path(scratch) / "fused.onnx"
            fusion_note = _transformer_fusions(parent, source, settings)
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[settings.level]
        options.optimized_model_filepath = str(out_path)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return (
        f"onnxruntime {ort.__version__} offline optimizer (level={settings.level}, "
        f"for CPUExecutionProvider; {fusion_note})"
    )


register(
    VariantSpec(
        "ort-optimized",
        "simplified",
        OrtOptimizedSettings,
        make_ort_optimized,
        # Measured: as exact as fp32 on the shipped recipes (1.0e-6 spreads max, 1.4e-7 mean; the
        # transformer got SkipLayerNormalization and FusedMatMul). 10x EXACT leaves room for
        # fusions that approximate (FastGelu's tanh form) on graphs those recipes do not have.
        Tolerance(atol=1e-4, mean_atol=1e-5, min_top1_agreement=1.0),
        "any",
        "ONNX Runtime graph optimizations and transformer fusions",
    )
)
