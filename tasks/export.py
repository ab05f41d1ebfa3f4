"""The export task: the trained checkpoint to a checked fp32 ONNX file (cached by its inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from onnxforge import pipeline
from onnxforge.cache import export_key
from onnxforge.data_record import DataRecord
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, TrainResult
from onnxforge.tracking import RunContext
from tasks.cache import CACHED, verified_key


def _key(inputs: dict[str, Any]) -> str:
    return export_key(inputs["recipe"], inputs["trained"].checkpoint_sha256, inputs["data"].sha256)


@task(name="export", cache_key_fn=verified_key(_key), **CACHED)
def export(
    recipe: Recipe, trained: TrainResult, data: DataRecord, context: RunContext
) -> ModelArtifact:
    """torch.onnx.export (dynamo, falling back to TorchScript), checker and shape inference."""
    artifact = pipeline.export(recipe, trained, data, Path(context.work_dir))
    get_run_logger().info(
        "exported %s by %s (%d bytes)", artifact.path, artifact.producer, artifact.size_bytes
    )
    return artifact
