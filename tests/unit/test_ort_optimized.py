"""ort-optimized keeps the best fused graph ONNX Runtime can load: a fused graph it refuses falls
back to the next candidate (in the end the plain graph), and `transformer_fusions: on` with
nothing fused is an error instead of a silently unfused file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxforge.variants import ort_optimized
from onnxforge.variants.ort_optimized import OrtOptimizedSettings, fused_ops, make_ort_optimized


def _transformerish(path: Path) -> Path:
    """Softmax and LayerNormalization: what marks a graph for the transformer fusions."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [0.0] * 4)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["n"], axis=-1),
        helper.make_node("Softmax", ["n"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[scale, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _broken_attention_fuser(source: Path, target: Path, settings: object) -> None:
    """A 'fusion' ONNX Runtime refuses: an Attention node without its required inputs."""
    model = onnx.load(str(source))
    model.graph.node.append(
        helper.make_node("Attention", ["y"], ["unused"], domain="com.microsoft", num_heads=1)
    )
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(target))


def _no_op_fuser(source: Path, target: Path, settings: object) -> None:
    onnx.save(onnx.load(str(source)), str(target))


def test_a_fused_graph_ort_refuses_falls_back_to_the_plain_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_optimized, "FUSERS", {"broken": _broken_attention_fuser})
    out = tmp_path / "out.onnx"
    made = make_ort_optimized(
        _transformerish(tmp_path / "m.onnx"), OrtOptimizedSettings(), out, np.zeros((1, 4))
    )
    assert "transformer fusions: none applied" in made.producer
    assert any("fusions by broken" in note and "refused" in note for note in made.notes)
    assert "Attention" not in fused_ops(out)


def test_fusions_on_with_nothing_fused_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_optimized, "FUSERS", {"nothing": _no_op_fuser})
    with pytest.raises(RuntimeError, match="transformer_fusions: on, but no fuser fused anything"):
        make_ort_optimized(
            _transformerish(tmp_path / "m.onnx"),
            OrtOptimizedSettings(transformer_fusions="on"),
            tmp_path / "out.onnx",
            np.zeros((1, 4)),
        )
