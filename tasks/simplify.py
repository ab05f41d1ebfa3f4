"""The simplify task: onnxsim, never fatal."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.simplify import simplify_model
from onnxforge.tracking import RunContext


@task(name="simplify", cache_policy=NO_CACHE)
def simplify(recipe: Recipe, parent: ModelArtifact, context: RunContext) -> VariantBuild:
    """Simplify the export; when that is impossible the reason is logged and the run goes on."""
    build = simplify_model(parent, recipe.simplify, Path(context.work_dir))
    if build.artifact is None:
        get_run_logger().warning(
            "not simplified, %s goes on unchanged: %s", parent.variant, build.reason
        )
    return build
