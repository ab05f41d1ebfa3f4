"""The variant task: make one registered ONNX variant from its parent (simplify, optimize, quantize)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.datasets import load_splits
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.tracking import RunContext
from onnxforge.variant_build import build_variant


@task(name="make-variant", cache_policy=NO_CACHE, task_run_name="make-{name}")
def make_variant(
    recipe: Recipe, name: str, parent: ModelArtifact, context: RunContext
) -> VariantBuild:
    """Build `name` from `parent`; a tool error is recorded on the build and the run goes on."""
    settings = dict(recipe.requested_variants())[name]
    train_features = load_splits(recipe.dataset).x_train  # calibration data for static int8
    build = build_variant(name, parent, settings, Path(context.work_dir), train_features)
    logger = get_run_logger()
    if build.artifact is None:
        logger.warning("variant %s not built, the run goes on: %s", name, build.reason)
    else:
        logger.info(
            "variant %s: %d bytes by %s", name, build.artifact.size_bytes, build.artifact.producer
        )
    return build
