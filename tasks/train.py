"""The train task: fit the recipe's model, logging loss and accuracy per epoch to MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.recipe import Recipe
from onnxforge.records import TrainResult
from onnxforge.tracking import RunContext, log_metrics
from onnxforge.training import train_model


@task(name="train", cache_policy=NO_CACHE)
def train(recipe: Recipe, context: RunContext) -> TrainResult:
    """Train (or take the checkpoint as is) and save a state_dict checkpoint."""
    logger = get_run_logger()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
        log_metrics(context, {f"train.{k}": v for k, v in metrics.items()}, step=epoch)

    result = train_model(recipe, Path(context.work_dir), on_epoch)
    log_metrics(
        context,
        {
            "train.final_val_accuracy": result.val_accuracy,
            "train.test_accuracy": result.test_accuracy,
            "train.seconds": result.seconds,
        },
    )
    accuracy = "n/a (no labels)" if result.test_accuracy is None else f"{result.test_accuracy:.4f}"
    logger.info("test accuracy %s after %d epochs", accuracy, result.epochs_run)
    return result
