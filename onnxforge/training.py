"""The train stage and the one way every stage rebuilds the source model from a checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxforge.adapters import get_adapter
from onnxforge.data_record import DataRecord, read_splits
from onnxforge.datasets import Splits
from onnxforge.inputs import sample_shape
from onnxforge.onnx_files import sha256_of, write_atomically
from onnxforge.recipe import Recipe
from onnxforge.records import EpochMetrics, TrainResult
from onnxforge.scoring import accuracy, is_class_scores, mae_rmse, matches_targets, task_of


def fresh_model(recipe: Recipe, splits: Splits) -> Any:
    """The recipe's architecture, seeded, sized from the data (random weights): one score per
    class, or one value per regression target."""
    import random

    import numpy as np

    random.seed(recipe.train.seed)
    np.random.seed(recipe.train.seed)
    adapter = get_adapter(recipe.model.framework)
    adapter.seed(recipe.train.seed)
    return adapter.build(recipe.model, sample_shape(splits.x_train), splits.output_size)


def load_source_model(recipe: Recipe, checkpoint: str | Path, splits: Splits) -> Any:
    """Rebuild the source model and load a checkpoint into it (weights only)."""
    model = fresh_model(recipe, splits)
    get_adapter(recipe.model.framework).load_checkpoint(model, Path(checkpoint))
    return model


def train_model(
    recipe: Recipe,
    out_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None],
    data: DataRecord,
) -> TrainResult:
    """Fit the recipe's model (or take its checkpoint as is), save the weights, score val/test."""
    adapter = get_adapter(recipe.model.framework)
    splits = read_splits(data)
    model = fresh_model(recipe, splits)
    if recipe.model.checkpoint is not None:
        adapter.load_checkpoint(model, recipe.model.checkpoint)
    else:
        check_no_random_weights(recipe, model)
    started = time.perf_counter()
    epochs_run = 0
    history: list[EpochMetrics] = []

    def record(epoch: int, metrics: dict[str, float]) -> None:
        history.append(EpochMetrics(epoch=epoch, metrics={k: float(v) for k, v in metrics.items()}))
        on_epoch(epoch, metrics)

    if recipe.train.enabled:
        adapter.fit(model, splits, recipe.train, record)
        epochs_run = recipe.train.epochs
    seconds = time.perf_counter() - started
    checkpoint = write_atomically(
        out_dir / f"checkpoint{adapter.checkpoint_suffix}",
        lambda temp: adapter.save_checkpoint(model, temp),
    )
    # Score the checkpoint as it was written, so every later stage compares against the same weights.
    reloaded = load_source_model(recipe, checkpoint, splits)
    val_scores = adapter.predict(reloaded, splits.x_val)[0]
    test_scores = adapter.predict(reloaded, splits.x_test)[0]
    return TrainResult(
        checkpoint=str(checkpoint),
        checkpoint_sha256=sha256_of(checkpoint),
        dataset_hash=splits.fingerprint(),
        epochs_run=epochs_run,
        val_accuracy=_accuracy(val_scores, splits.y_val),
        test_accuracy=_accuracy(test_scores, splits.y_test),
        val_rmse=_rmse(val_scores, splits.y_val),
        test_rmse=_rmse(test_scores, splits.y_test),
        seconds=seconds,
        history=tuple(history),
    )


def check_no_random_weights(recipe: Recipe, model: Any) -> None:
    """Untrained, a model keeps the weights it was built with: a `transformers` folder whose head
    does not match the data's classes (or has none) would be registered with a random head."""
    fresh = getattr(model, "fresh_weights", ())
    if recipe.train.enabled or recipe.model.checkpoint is not None or not fresh:
        return
    raise ValueError(
        f"model.kwargs.pretrained: the folder has no weights for {', '.join(fresh[:4])} (a head "
        "for another number of classes, or none): they would stay random with train.enabled "
        "false; train them, or bring a folder whose head matches the data's classes"
    )


def _accuracy(scores: Any, labels: Any) -> float | None:
    """Share of unique-argmax hits (a tie is wrong); absent (None), not zero, when there are no
    labels or the output is not class scores."""
    if task_of(labels) != "classification" or not is_class_scores(scores):
        return None
    return accuracy(scores, labels)


def _rmse(values: Any, labels: Any) -> float | None:
    """RMSE against regression targets; None for other tasks or an output of another size."""
    if task_of(labels) != "regression" or not matches_targets(values, labels):
        return None
    return mae_rmse(values, labels)[1]


def final_metrics(result: TrainResult, reused: bool) -> dict[str, float | None]:
    """The run-level training numbers; `train.reused` is 1 when a stored training was taken."""
    return {
        "train.final_val_accuracy": result.val_accuracy,
        "train.test_accuracy": result.test_accuracy,
        "train.final_val_rmse": result.val_rmse,
        "train.test_rmse": result.test_rmse,
        "train.seconds": result.seconds,
        "train.reused": 1.0 if reused else 0.0,
    }
