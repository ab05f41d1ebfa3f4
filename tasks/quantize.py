"""The quantize task: int8 dynamic quantization of the simplified model."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.quantize import quantize_model
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.tracking import RunContext


@task(name="quantize", cache_policy=NO_CACHE)
def quantize(recipe: Recipe, parent: ModelArtifact, context: RunContext) -> VariantBuild:
    """Quantize `parent`; a tool error is recorded on the build, not raised."""
    build = quantize_model(parent, recipe.quantize, Path(context.work_dir))
    if build.artifact is None:
        get_run_logger().warning("variant %s not built: %s", build.variant, build.reason)
    return build
