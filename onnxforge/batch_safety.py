"""Is it provably safe to make a fixed dimension 0 symbolic? A conservative graph walk.

Only ops on an allow-list pass, each with the attribute checks that keep dimension 0 the batch
(no reduction, concatenation, split, transpose or slice over it; a Reshape must copy it with 0 or
infer it with -1 from per-sample dims alone; no constant operand whose dimension 0 is the fixed
batch). Shape-reading ops (Shape, Size, Expand, Tile, Range, ...), control flow and anything not
listed refuse. Tensors computed from constants only are not the batch and are not checked.
"""

from __future__ import annotations

import math
from typing import Any

# Ops that work on each sample on its own whatever their attributes (inputs: batch first).
PER_SAMPLE = frozenset(
    "Relu LeakyRelu PRelu Sigmoid Tanh Elu Selu Celu HardSigmoid HardSwish Softplus Softsign "
    "Gelu Mish Erf Exp Log Sqrt Reciprocal Neg Abs Floor Ceil Round Sign Sin Cos Clip Identity "
    "Cast Dropout BatchNormalization InstanceNormalization LRN Conv ConvTranspose ConvInteger "
    "QLinearConv MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool "
    "IsNaN IsInf Not".split()
)
# Elementwise ops with broadcasting: a constant operand must not carry the batch.
BROADCAST = frozenset(
    "Add Sub Mul Div Pow Max Min Sum Mean Mod Where Equal Less Greater LessOrEqual "
    "GreaterOrEqual And Or Xor BitShift".split()
)
# Ops with an axis (attribute `axis`, default in the tuple) that must not be dimension 0.
AXIS_OPS = {
    "Softmax": 1,  # opset < 13 coerces to 2-D at `axis`; >= 13 defaults to -1: both keep dim 0
    "LogSoftmax": 1,
    "Hardmax": 1,
    "LayerNormalization": -1,
    "Flatten": 1,
    "Concat": None,
    "Split": 0,
    "ArgMax": 0,
    "ArgMin": 0,
    "TopK": -1,
    "Gather": 0,
    "QuantizeLinear": 1,
    "DequantizeLinear": 1,
}
REDUCE = frozenset(
    "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare".split()
)


class _Graph:
    """What the walk needs: constants, inferred ranks and shapes, and which tensors carry the batch."""

    def __init__(self, model: Any) -> None:
        import onnx
        from onnx import numpy_helper
        from onnx.external_data_helper import uses_external_data

        inferred = onnx.shape_inference.infer_shapes(model)
        # Values of the initializers stored inline (shape targets, axes, pads are small); the
        # weights may sit in external data that was not loaded: only their shapes are read.
        self.constants: dict[str, Any] = {
            init.name: numpy_helper.to_array(init)
            for init in model.graph.initializer
            if not uses_external_data(init)
        }
        weights = {init.name: list(init.dims) for init in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute:
                value = onnx.helper.get_attribute_value(node.attribute[0])
                if isinstance(value, onnx.TensorProto):
                    self.constants[node.output[0]] = numpy_helper.to_array(value)
        self.shapes: dict[str, list[int | None]] = {}
        graph = inferred.graph
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = [
                    d.dim_value if d.HasField("dim_value") else None
                    for d in value.type.tensor_type.shape.dim
                ]
        for name, array in self.constants.items():
            self.shapes[name] = list(array.shape)
        self.shapes.update(weights)
        self.batch: set[str] = {i.name for i in model.graph.input if i.name not in weights}
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _touches_zero(axes: Any, rank: int | None) -> bool:
    """True when any of `axes` is dimension 0 (or cannot be told: negative with unknown rank)."""
    for axis in [int(a) for a in axes]:
        if axis < 0 and rank is None:
            return True
        if (axis + rank if axis < 0 else axis) == 0:
            return True
    return False


def _axes_input(node: Any, graph: _Graph, position: int) -> Any:
    if len(node.input) > position and node.input[position]:
        return graph.constants.get(node.input[position])  # None: computed at run time
    return None


def _reshape_problem(node: Any, graph: _Graph, batch: int) -> str | None:
    target = graph.constants.get(node.input[1])
    if target is None:
        return "its target shape is computed at run time"
    target = [int(v) for v in target]
    if not target:
        return "it reshapes to a scalar"
    if target[0] == 0 and not _attr(node, "allowzero", 0):
        return None  # copies dimension 0 from its input
    source = graph.shapes.get(node.input[0])
    if target[0] == -1 and -1 not in target[1:] and source and None not in source[1:]:
        copies = [i for i, v in enumerate(target) if v == 0]
        if all(i < len(source) for i in copies):
            rest = [source[i] if v == 0 else v for i, v in enumerate(target)][1:]
            if math.prod(rest) == math.prod(source[1:]):
                return None  # -1 is the batch: the other dims are exactly one sample
    return f"its target shape {target} hardcodes dimension 0 (the batch of {batch})"


def _node_problem(node: Any, graph: _Graph, batch: int) -> str | None:
    """Why this node (reading the batch) would break with another batch size; None when safe."""
    op = node.op_type
    rank = graph.rank(node.input[0]) if node.input else None
    first_is_batch = bool(node.input) and node.input[0] in graph.batch
    if node.domain not in ("", "ai.onnx"):
        return f"op {node.domain}.{op} is not known to keep the batch"
    if op in PER_SAMPLE:
        return None if first_is_batch else "its first input is not the batch"
    if op in BROADCAST:
        out_rank = graph.rank(node.output[0])
        for name in node.input:
            if name in graph.batch or not name:
                continue
            shape = graph.shapes.get(name)
            if shape is None or out_rank is None:
                return f"the shape of operand {name!r} is unknown"
            if len(shape) == out_rank and shape[0] != 1:
                return f"operand {name!r} {shape} carries the batch of {batch}"
        return None
    if op == "Gather" and not first_is_batch:
        return None  # a constant lookup table indexed by batch-carrying indices
    if op in AXIS_OPS:
        default = AXIS_OPS[op]
        if op in ("Softmax", "LogSoftmax", "Hardmax"):
            default = -1 if graph.opset >= 13 else 1
        axis = _attr(node, "axis", default)
        if axis is None or _touches_zero([axis], rank):
            return f"it works along dimension 0 (axis {axis})"
        if op == "Concat" and any(name not in graph.batch for name in node.input):
            return "it concatenates the batch with a constant"
        return None if first_is_batch else "its first input is not the batch"
    if op == "Gemm":
        if _attr(node, "transA", 0) or not first_is_batch:
            return "its A operand is not the batch"
        if any(name in graph.batch for name in node.input[1:]):
            return "it multiplies two batch-carrying tensors"
        return None
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        second = node.input[3] if op == "QLinearMatMul" else node.input[1]
        if not first_is_batch or rank is None or rank < 2:
            return "its first operand is not a batched matrix"
        if second in graph.batch and (rank < 3 or graph.rank(second) != rank):
            return "it multiplies across the batch"
        return None
    if op == "Transpose":
        perm = _attr(node, "perm", None)
        return None if perm and perm[0] == 0 else f"it moves dimension 0 (perm {perm})"
    if op == "Reshape":
        return _reshape_problem(node, graph, batch)
    if op in REDUCE:
        axes = _attr(node, "axes", None)
        if axes is None:
            axes = _axes_input(node, graph, 1)
        if axes is None or len(axes) == 0:
            return "it reduces over every dimension, the batch included"
        return "it reduces over dimension 0" if _touches_zero(axes, rank) else None
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes", None)
        if axes is None:
            axes = _axes_input(node, graph, 1)
        if axes is None:
            return "its axes are not constant"
        out_rank = graph.rank(node.output[0]) if op == "Unsqueeze" else rank
        return f"it {op.lower()}s dimension 0" if _touches_zero(axes, out_rank) else None
    if op == "Slice":
        axes = _axes_input(node, graph, 3)
        if axes is None:
            return "its axes are not constant (default axes include dimension 0)"
        return "it slices dimension 0" if _touches_zero(axes, rank) else None
    if op == "Pad":
        pads = _attr(node, "pads", None)
        if pads is None:
            pads = _axes_input(node, graph, 1)
        if pads is None or rank is None:
            return "its pads are not constant"
        if len(node.input) > 3 and node.input[3]:  # opset 18: pads name only these axes
            axes = _axes_input(node, graph, 3)
            if axes is None:
                return "its axes are not constant"
            if len(pads) != 2 * len(axes):
                return f"its pads ({len(pads)} values) do not match its {len(axes)} axes"
            padded = {(a + rank) % rank for a, (b, e) in _pairs(axes, pads) if b or e}
            return "it pads dimension 0" if 0 in padded else None
        if len(pads) != 2 * rank:
            return f"its pads ({len(pads)} values) do not cover its {rank} dimensions"
        return "it pads dimension 0" if pads[0] or pads[rank] else None
    return f"op {op} is not known to keep the batch"


def _pairs(axes: list[int], pads: list[int]) -> list[tuple[int, tuple[int, int]]]:
    """(axis, (begin, end)) for Pad's opset-18 form: begins for every axis, then ends."""
    count = len(axes)
    return [(axis, (pads[i], pads[count + i])) for i, axis in enumerate(axes)]


def unsafe_reason(model: Any, batch: int) -> str | None:
    """Why making dimension 0 symbolic could change what the model computes; None when safe."""
    graph = _Graph(model)
    for node in model.graph.node:
        if not any(name in graph.batch for name in node.input):
            continue  # computed from constants only
        if any(attribute.g.node or attribute.graphs for attribute in node.attribute):
            return f"node {node.name or node.op_type!r} ({node.op_type}) has a subgraph"
        problem = _node_problem(node, graph, batch)
        if problem is not None:
            return f"node {node.name or node.op_type!r} ({node.op_type}): {problem}"
        graph.batch.update(name for name in node.output if name)
    for output in model.graph.output:
        if output.name not in graph.batch:
            return f"output {output.name!r} does not come from the inputs' batch"
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value != batch:
            return f"output {output.name!r} has dimension 0 = {dims[0].dim_value}, not the batch"
    return None
