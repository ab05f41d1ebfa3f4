"""A regression target through the whole flow: a float target is split without stratification,
an MLP is trained with MSE, parity scores MAE/RMSE (never top-1) and a version is registered."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE, FAST

pytestmark = pytest.mark.slow


def _diabetes_npz(folder: Path) -> Path:
    """scikit-learn's diabetes set (442 samples, shipped offline), standardised, so the target
    is a fractional float column: inferred as regression."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    features = (bunch.data - bunch.data.mean(axis=0)) / bunch.data.std(axis=0)
    target = (bunch.target - bunch.target.mean()) / bunch.target.std()
    path = folder / "diabetes.npz"
    np.savez(path, x=features.astype(np.float32), y=target)
    return path


def _recipe(folder: Path) -> Path:
    data = copy.deepcopy(yaml.safe_load(DEFAULT_RECIPE.read_text()))
    data["name"] = "diabetes-mlp"
    data["dataset"] = {"source": "npz", "path": str(_diabetes_npz(folder)), "seed": 0}
    data["model"] = {"framework": "pytorch", "architecture": "mlp", "kwargs": {"hidden": 32}}
    data["train"] = {"epochs": 20, "batch_size": 32, "learning_rate": 0.003, "seed": 0}
    # the standardised target's spread is 1.0: predicting the mean scores an RMSE of about 1
    data["register"] = {**data["register"], "model_name": "diabetes-mlp", "max_rmse": 0.95}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_regression_npz_runs_end_to_end(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow

    from flows.onnx_pipeline import onnx_pipeline

    overrides = {key: value for key, value in FAST.items() if key != "train.epochs"}
    registration = onnx_pipeline(recipe_path=str(_recipe(tmp_path)), overrides=overrides)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("diabetes-mlp", "1")
    run = client.get_run(version.tags["source_run_id"])
    metrics = run.data.metrics
    assert "train.val_rmse" in metrics and 0 < metrics["train.test_rmse"] < 0.95
    chosen = version.tags["variant"]
    assert metrics[f"parity.{chosen}.passed"] == 1
    assert 0 < metrics[f"parity.{chosen}.mae"] < metrics[f"parity.{chosen}.rmse"] < 0.95
    assert metrics["parity.fp32.rmse"] == pytest.approx(metrics["parity.fp32.source_rmse"], 1e-3)
    top1 = [k for k in metrics if "top1" in k or k.endswith("accuracy")]
    assert top1 == [], "a regression run has no top-1 or accuracy metric"
    (dataset_input,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in dataset_input.tags}["onnxforge.task"] == "regression"
