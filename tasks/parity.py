"""The parity task: every variant against the source model, metrics logged per variant."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.data_record import DataRecord
from onnxforge.metrics import parity_metrics
from onnxforge.pipeline import check_parity
from onnxforge.profiles import labelled
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, ParityResult, TrainResult
from onnxforge.tracking import RunContext, log_metrics


@task(name="parity-validate", cache_policy=NO_CACHE)
def validate_parity(
    recipe: Recipe,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    data: DataRecord,
    context: RunContext,
) -> list[ParityResult]:
    """Run each variant on the test split; failing variants stay in the report with their reasons."""
    results = check_parity(recipe, trained, artifacts, data)
    log_metrics(context, parity_metrics(results))
    logger = get_run_logger()
    for result in results:
        if result.passed:
            named = labelled(result.variant, result.profile)
            logger.info("parity %s: pass (max abs err %.3g)", named, result.max_abs_err)
        else:
            logger.warning(
                "parity %s: FAIL %s",
                labelled(result.variant, result.profile),
                [f.message for f in result.failures],
            )
    return results
