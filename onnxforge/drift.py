"""Which layers of a quantized model drift most from its float parent (ONNX Runtime's QDQ
debugging tools), so a user knows what to put in `nodes_to_exclude`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.inputs import count, tile
from onnxforge.records import LayerDrift


def _activations(
    model_path: str, features: np.ndarray, scratch: Path, tag: str
) -> dict[str, list[np.ndarray]]:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    from onnxforge.batching import file_batch
    from onnxforge.variants.quantization import ArrayReader, graph_input_names

    augmented = scratch / f"{tag}.onnx"
    modify_model_output_intermediate_tensors(model_path, augmented)
    fixed = file_batch(model_path)  # a fixed-batch model is fed whole batches of its size
    if fixed is not None:  # whole batches; a batch larger than the samples gets repeats
        usable = max(fixed, count(features) // fixed * fixed)
        features = tile(features, usable)
    reader = ArrayReader(graph_input_names(Path(model_path)), features, fixed or 16)
    return collect_activations(str(augmented), reader)


def _producers(model_path: str) -> dict[str, str]:
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    return {output: node.name or node.op_type for node in graph.node for output in node.output}


def drifting_layers(
    float_path: str, quant_path: str, features: np.ndarray, top: int = 5
) -> list[LayerDrift]:
    """The `top` float tensors with the lowest SQNR between the float and the quantized model.

    QDQ models are matched with create_activation_matching; for dynamically quantized models the
    tensors that keep their float names in both graphs are compared directly.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_signal_to_quantization_noice_ratio as sqnr,
    )
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    try:
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder)
            float_acts = _activations(float_path, features, scratch, "float")
            quant_acts = _activations(quant_path, features, scratch, "quant")
    except Exception:  # noqa: BLE001 - the report is a hint; parity already failed with its reason
        return []
    matching = create_activation_matching(quant_acts, float_acts)
    pairs = {name: (m["float"], m["post_qdq"]) for name, m in matching.items() if m.get("float")}
    if not pairs:
        pairs = {
            name: (float_acts[name], quant_acts[name])
            for name in float_acts.keys() & quant_acts.keys()
            if all(
                a.shape == b.shape for a, b in zip(float_acts[name], quant_acts[name], strict=False)
            )
        }
    return rank_layers(pairs, _producers(float_path), sqnr, top)


def identical(float_arrays: list[np.ndarray], quant_arrays: list[np.ndarray]) -> bool:
    """The same values in both models (e.g. an all-zero mask): no drift to report."""
    return len(float_arrays) == len(quant_arrays) and all(
        np.array_equal(f, q) for f, q in zip(float_arrays, quant_arrays, strict=True)
    )


def rank_layers(
    pairs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
    producers: dict[str, str],
    sqnr: Any,
    top: int = 5,
) -> list[LayerDrift]:
    """The `top` tensors with the lowest SQNR (`sqnr(float, quant)` in dB). Tensors identical in
    both models are left out: their SQNR is 0/0 (NaN, or 0 dB), which would rank a tensor the
    quantizer never touched as the worst layer."""
    scores = []
    for name, (float_arrays, quant_arrays) in pairs.items():
        if name not in producers or identical(float_arrays, quant_arrays):
            continue
        score = float(sqnr(float_arrays, quant_arrays))
        if not np.isnan(score):
            scores.append((score, name))
    return [
        LayerDrift(tensor=name, node=producers[name], sqnr_db=score)
        for score, name in sorted(scores)[:top]
    ]
