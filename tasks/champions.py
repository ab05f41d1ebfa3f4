"""Champion tasks: fetch the versions that hold champion aliases (verified), score them here."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.champions import evaluate_champions, fetch_champions
from onnxforge.data_record import DataRecord
from onnxforge.recipe import Recipe
from onnxforge.records import ChampionRecord, TrainResult
from onnxforge.tracking import RunContext
from tasks.cache import MLFLOW_IO_RETRIES


@task(name="fetch-champions", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def fetch_champion_versions(recipe: Recipe, context: RunContext) -> list[ChampionRecord]:
    """Download and sha256-check every version holding champion or champion-<provider>."""
    champions = fetch_champions(recipe, context.tracking_uri, Path(context.work_dir))
    logger = get_run_logger()
    if not champions:
        logger.info("no champion for %s yet", recipe.registry.model_name)
    for champion in champions:
        state = "verified" if champion.verified else f"NOT verified: {champion.reason}"
        logger.info("v%s holds %s: %s", champion.version, ", ".join(champion.aliases), state)
    return champions


@task(name="evaluate-champions", cache_policy=NO_CACHE)
def score_champions(
    recipe: Recipe, trained: TrainResult, champions: list[ChampionRecord], data: DataRecord
) -> list[ChampionRecord]:
    """Each verified champion on this run's test split (accuracy, agreement with this model)."""
    scored = evaluate_champions(recipe, trained.checkpoint, champions, data)
    logger = get_run_logger()
    for champion in scored:
        if champion.evaluation is not None:
            logger.info(
                "champion v%s on this run's test split: accuracy %s",
                champion.version,
                champion.evaluation.accuracy,
            )
        elif champion.path is not None:
            logger.warning("champion v%s: %s", champion.version, champion.reason)
    return scored
