"""The export stage: framework model -> checked fp32 ONNX file that records its exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxforge.adapters import get_adapter
from onnxforge.data_record import DataRecord, read_splits
from onnxforge.errors import StageError
from onnxforge.inputs import take
from onnxforge.onnx_files import describe_onnx, write_atomically
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact
from onnxforge.training import load_source_model

EXPORTER_KEY = "onnxforge.producer"


def export_model(recipe: Recipe, checkpoint: str, out_dir: Path, data: DataRecord) -> ModelArtifact:
    """Export the checkpointed model to `fp32.onnx`, full-check it and infer its shapes."""
    splits = read_splits(data)
    model = load_source_model(recipe, checkpoint, splits)
    adapter = get_adapter(recipe.model.framework)
    # A batch of 4 keeps the exporter from specialising the batch dimension to 0/1.
    example = take(splits.x_test, slice(0, 4))
    producer = ""

    def write(temp: Path) -> None:
        nonlocal producer
        try:
            producer = adapter.export(model, example, recipe.export, temp)
        except RuntimeError as error:
            raise StageError("export", str(error), variant="fp32") from None
        # a brought ONNX file keeps its fixed dims (a fixed batch is run at the size it accepts)
        stamp_and_check(temp, producer, recipe.export, getattr(adapter, "keeps_file_shapes", False))

    path = write_atomically(out_dir / "fp32.onnx", write)
    return describe_onnx(path, "fp32", None, producer)


def name_dynamic_axes(model: Any, spec: Any, keep_fixed: bool = False) -> None:
    """Give each input's symbolic dims (and the outputs' batch dim) the recipe's names; a declared
    axis that came out fixed is an export error, unless `keep_fixed` (a file brought as it is)."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    for graph_input in graph_inputs:
        dims = graph_input.type.tensor_type.shape.dim
        for index, name in spec.axes_for(graph_input.name).items():
            if keep_fixed and index < len(dims) and dims[index].HasField("dim_value"):
                continue
            if index >= len(dims) or dims[index].HasField("dim_value"):
                raise StageError(
                    "export",
                    f"export.dynamic_axes: input {graph_input.name!r} dimension {index} ({name}) "
                    "came out fixed in the exported graph",
                    variant="fp32",
                )
            dims[index].dim_param = name
    batch = spec.axes_for(graph_inputs[0].name).get(0) if graph_inputs else None
    for output in model.graph.output if batch else []:
        out_dims = output.type.tensor_type.shape.dim
        if out_dims and not out_dims[0].HasField("dim_value"):
            out_dims[0].dim_param = batch


def stamp_and_check(path: Path, producer: str, axes: Any, keep_fixed: bool = False) -> None:
    """Record the producer in the metadata, name the dynamic axes, full-check, infer shapes."""
    import onnx

    model = onnx.load(str(path))
    name_dynamic_axes(model, axes, keep_fixed)
    entry = next((p for p in model.metadata_props if p.key == EXPORTER_KEY), None)
    if entry is None:
        entry = model.metadata_props.add()
        entry.key = EXPORTER_KEY
    entry.value = producer
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
