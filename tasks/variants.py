"""The variant task: make one registered ONNX variant from its parent (simplify, optimize, quantize)
and check it (full onnx.checker, a CPU session, one inference on the run's data).

Cached by the parent file's sha256, the variant's settings, the calibration data and the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from onnxforge import pipeline
from onnxforge.cache import variant_key
from onnxforge.data_record import DataRecord
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.tracking import RunContext
from tasks.cache import CACHED, verified_key


def _key(inputs: dict[str, Any]) -> str:
    name = inputs["name"]
    settings = dict(inputs["recipe"].requested_variants())[name]
    return variant_key(name, settings, inputs["parent"].sha256, inputs["data"].sha256)


@task(
    name="make-variant",
    task_run_name="make-{name}",
    cache_key_fn=verified_key(_key),
    **CACHED,
)
def make_variant(
    recipe: Recipe, name: str, parent: ModelArtifact, data: DataRecord, context: RunContext
) -> VariantBuild:
    """Build `name` from `parent`; a tool error is recorded on the build and the run goes on."""
    build = pipeline.make_variant(recipe, name, parent, data, Path(context.work_dir))
    logger = get_run_logger()
    if build.artifact is None:
        logger.warning("variant %s build_failed, the run goes on: %s", name, build.reason)
        return build
    artifact = build.artifact
    logger.info(
        "variant %s: %d bytes by %s; checked: %s",
        name,
        artifact.size_bytes,
        artifact.producer,
        artifact.checks,
    )
    for note in artifact.notes:
        logger.warning("variant %s: %s", name, note)
    return build
