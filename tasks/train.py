"""The train task: fit the recipe's model, logging loss and accuracy per epoch to MLflow.

Its result is cached (tasks/cache.py): the same model, train and dataset sections, data and code
reuse the stored checkpoint instead of training again; `log-training` then copies the reused
training's numbers into this run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge import pipeline
from onnxforge.cache import train_key
from onnxforge.data_record import DataRecord
from onnxforge.recipe import Recipe
from onnxforge.records import TrainResult
from onnxforge.tracking import RunContext, log_metrics
from onnxforge.training import final_metrics
from tasks.cache import CACHED, MLFLOW_IO_RETRIES, verified_key


def _key(inputs: dict[str, Any]) -> str:
    return train_key(inputs["recipe"], inputs["data"].sha256)


@task(name="train", cache_key_fn=verified_key(_key), **CACHED)
def train(recipe: Recipe, data: DataRecord, context: RunContext) -> TrainResult:
    """Train (or take the checkpoint as is) and save a state_dict checkpoint."""
    logger = get_run_logger()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
        log_metrics(context, {f"train.{k}": v for k, v in metrics.items()}, step=epoch)

    result = pipeline.train(recipe, data, Path(context.work_dir), on_epoch)
    result = result.model_copy(update={"mlflow_run_id": context.run_id})
    if result.test_rmse is not None:
        logger.info("test RMSE %.4g after %d epochs", result.test_rmse, result.epochs_run)
    else:
        accuracy = (
            "n/a (no labels)" if result.test_accuracy is None else f"{result.test_accuracy:.4f}"
        )
        logger.info("test accuracy %s after %d epochs", accuracy, result.epochs_run)
    return result


@task(name="log-training", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def log_training(trained: TrainResult, context: RunContext) -> None:
    """Final training numbers into this run; per-epoch ones too when the training was reused."""
    reused = trained.mlflow_run_id != context.run_id
    if reused:
        get_run_logger().info(
            "training reused from MLflow run %s (%s)", trained.mlflow_run_id, trained.checkpoint
        )
        for epoch in trained.history:
            metrics = {f"train.{k}": v for k, v in epoch.metrics.items()}
            log_metrics(context, metrics, step=epoch.epoch)
    log_metrics(context, final_metrics(trained, reused))
