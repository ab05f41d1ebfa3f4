"""The export stage: framework model -> checked fp32 ONNX file that records its exporter."""

from __future__ import annotations

from pathlib import Path

from onnxforge.adapters import get_adapter
from onnxforge.datasets import load_splits
from onnxforge.errors import StageError
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, describe_onnx, write_atomically
from onnxforge.training import load_source_model

EXPORTER_KEY = "onnxforge.producer"


def export_model(recipe: Recipe, checkpoint: str, out_dir: Path) -> ModelArtifact:
    """Export the checkpointed model to `fp32.onnx`, full-check it and infer its shapes."""
    splits = load_splits(recipe.dataset)
    model = load_source_model(recipe, checkpoint, splits)
    adapter = get_adapter(recipe.model.framework)
    # A batch of 4 keeps the exporter from specialising the batch dimension to 0/1.
    example = splits.x_test[:4]
    producer = ""

    def write(temp: Path) -> None:
        nonlocal producer
        try:
            producer = adapter.export(model, example, recipe.export, temp)
        except RuntimeError as error:
            raise StageError("export", str(error), variant="fp32") from None
        stamp_and_check(temp, producer)

    path = write_atomically(out_dir / "fp32.onnx", write)
    return describe_onnx(path, "fp32", None, producer)


def stamp_and_check(path: Path, producer: str) -> None:
    """Record the producer in the file's metadata, run the full checker and shape inference."""
    import onnx

    model = onnx.load(str(path))
    entry = next((p for p in model.metadata_props if p.key == EXPORTER_KEY), None)
    if entry is None:
        entry = model.metadata_props.add()
        entry.key = EXPORTER_KEY
    entry.value = producer
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
