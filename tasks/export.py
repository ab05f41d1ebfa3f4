"""The export task: the trained checkpoint to a checked fp32 ONNX file."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.export import export_model
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, TrainResult
from onnxforge.tracking import RunContext


@task(name="export", cache_policy=NO_CACHE)
def export(recipe: Recipe, trained: TrainResult, context: RunContext) -> ModelArtifact:
    """torch.onnx.export (dynamo, falling back to TorchScript), checker and shape inference."""
    artifact = export_model(recipe, trained.checkpoint, Path(context.work_dir))
    get_run_logger().info(
        "exported %s by %s (%d bytes)", artifact.path, artifact.producer, artifact.size_bytes
    )
    return artifact
