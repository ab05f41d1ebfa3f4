"""The data task: the recipe's splits, made once per run and handed to every stage as a record."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.data_record import DataRecord, dataset_name, log_dataset_input
from onnxforge.pipeline import prepare_data
from onnxforge.recipe import Recipe
from onnxforge.tracking import RunContext
from tasks.cache import MLFLOW_IO_RETRIES


@task(name="materialize-data", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def materialize_data(recipe: Recipe, context: RunContext) -> DataRecord:
    """Write the splits to one .npz in the run's work folder; log it as the run's dataset input."""
    data = prepare_data(recipe, Path(context.work_dir))
    log_dataset_input(context.tracking_uri, context.run_id, recipe.dataset, data)
    get_run_logger().info(
        "data %s: %s samples, sha256 %s", dataset_name(recipe.dataset), data.samples, data.sha256
    )
    return data
