"""ort-optimized: ONNX Runtime's offline graph optimizations saved to a file, plus transformer
fusions (attention, skip layer norm, GELU) for transformer graphs.

Made from the raw export (fp32), not from onnxsim's output: simplification folds and reorders the
subgraphs the fusions look for (a `transformers` BERT simplified first got no attention fusion).
Two fusers are tried on a transformer graph and the one that fuses more attention is kept:
onnxscript's ORT fusion rewriter (`optimize_for_ort`, written for torch.onnx's dynamo exports,
which it fuses into Attention / MultiHeadAttention) and onnxruntime.transformers' BERT optimizer
(pattern-matched on TorchScript-style exports with an attention mask).
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from onnxforge.variants import Made, Tolerance, VariantSettings, VariantSpec, register

# Ops whose presence marks a transformer graph worth the transformer fusions.
_TRANSFORMER_MARKERS = {"Softmax", "LayerNormalization"}
# Fused ops that mean the attention itself was fused (what the speed comes from).
ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}
_MS_DOMAIN = "com.microsoft"


class OrtOptimizedSettings(VariantSettings):
    """Optimization level (extended stays portable across CPU builds) and transformer fusions."""

    level: Literal["basic", "extended", "all"] = "extended"
    transformer_fusions: Literal["auto", "on", "off"] = "auto"
    num_heads: int = Field(0, ge=0)  # 0: let the optimizer detect it
    hidden_size: int = Field(0, ge=0)


def fused_ops(path: Path) -> dict[str, int]:
    """Count of each com.microsoft op in a file: the fusions that applied."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node if n.domain == _MS_DOMAIN))


def _onnxscript_fuser(source: Path, target: Path, _: OrtOptimizedSettings) -> None:
    import onnx_ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _counts = optimize_for_ort(onnx_ir.load(str(source)))
    onnx_ir.save(model, str(target))


def _ort_fuser(source: Path, target: Path, settings: OrtOptimizedSettings) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=settings.num_heads,
        hidden_size=settings.hidden_size,
        opt_level=0,
        use_gpu=False,
    )
    optimized.save_model_to_file(str(target))


FUSERS = {
    "onnxscript ort_fusions": _onnxscript_fuser,
    "onnxruntime.transformers bert optimizer": _ort_fuser,
}


def _score(counts: dict[str, int]) -> tuple[int, int]:
    """Attention fused first, then fused ops in all."""
    return sum(n for op, n in counts.items() if op in ATTENTION_OPS), sum(counts.values())


def _transformer_fusions(
    source: Path, scratch: Path, settings: OrtOptimizedSettings
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Each fuser's file that fused something with its note, most attention first; fuser errors."""
    scored: list[tuple[tuple[int, int], Path, str]] = []
    failures = []
    for index, (name, fuser) in enumerate(FUSERS.items()):
        target = scratch / f"fused-{index}.onnx"
        try:
            fuser(source, target, settings)
        except Exception as error:  # noqa: BLE001 - a fuser that cannot read a graph is a note; the other may
            failures.append(f"{name} failed: {type(error).__name__}: {str(error)[:200]}")
            continue
        counts = fused_ops(target)
        if _score(counts) != (0, 0):
            summary = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
            scored.append((_score(counts), target, f"fusions by {name}: {summary}"))
    scored.sort(key=lambda item: item[0], reverse=True)
    return [(path, note) for _, path, note in scored], failures


def _candidates(
    parent: Path, scratch: Path, settings: OrtOptimizedSettings
) -> tuple[list[tuple[Path, str]], list[str]]:
    """Graphs to optimize, best first, ending with the parent itself; fuser errors.
    `transformer_fusions: on` with nothing fused is an error, not a silent plain graph."""
    if not _wants_fusions(parent, settings.transformer_fusions):
        return [(parent, "no transformer fusions")], []
    fused, failures = _transformer_fusions(parent, scratch, settings)
    if not fused and settings.transformer_fusions == "on":
        raise RuntimeError(
            "transformer_fusions: on, but no fuser fused anything"
            + (f" ({'; '.join(failures)})" if failures else "")
        )
    return [*fused, (parent, "transformer fusions: none applied")], failures


def _wants_fusions(path: Path, mode: str) -> bool:
    import onnx

    if mode != "auto":
        return mode == "on"
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    return _TRANSFORMER_MARKERS <= ops


def make_ort_optimized(
    parent: Path, settings: OrtOptimizedSettings, out_path: Path, _: np.ndarray
) -> Made:
    """Transformer fusions (when the graph has attention), then ORT's offline optimizer."""
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    with tempfile.TemporaryDirectory() as scratch:
        candidates, failures = _candidates(parent, Path(scratch), settings)
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[settings.level]
        options.optimized_model_filepath = str(out_path)
        for source, fusion_note in candidates:
            try:
                ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
                break
            except Exception as error:  # noqa: BLE001 - a fused graph ORT refuses: try the next
                if source == parent:
                    raise
                failures.append(f"{fusion_note}: refused by ONNX Runtime: {str(error)[:200]}")
    producer = (
        f"onnxruntime {ort.__version__} offline optimizer (level={settings.level}, "
        f"for CPUExecutionProvider; {fusion_note})"
    )
    return Made(producer, tuple(failures))


register(
    VariantSpec(
        "ort-optimized",
        "fp32",
        OrtOptimizedSettings,
        make_ort_optimized,
        # Measured: as exact as fp32 on the shipped recipes (1.0e-6 spreads max, 1.4e-7 mean, when
        # the transformer got SkipLayerNormalization and FusedMatMul); the attention fusions
        # (Attention, BiasGelu on hf_bert; MultiHeadAttention on text_transformer) pass it in the
        # flow tests. 10x EXACT leaves room for fusions that approximate (FastGelu's tanh form).
        Tolerance(atol=1e-4, mean_atol=1e-5, min_top1_agreement=1.0),
        "any",
        "ONNX Runtime graph optimizations and transformer fusions",
    )
)
