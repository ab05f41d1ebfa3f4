"""Task types: classification, regression or none, read from the labels or set in the recipe, and
followed by the splits, the label checks, parity, the floors and training."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from onnxforge.datasets import load_splits
from onnxforge.errors import RecipeError
from onnxforge.floors import floor_failures
from onnxforge.parity import ParityBar, compare_outputs
from onnxforge.preflight import load_and_check
from onnxforge.recipe import RegisterSpec, load_recipe
from onnxforge.variants import VARIANTS
from tests.conftest import DEFAULT_RECIPE, data_of

BASE = yaml.safe_load(DEFAULT_RECIPE.read_text())
MLP = {"framework": "pytorch", "architecture": "mlp", "kwargs": {"hidden": 16, "layers": 1}}


def write_recipe(folder: Path, dataset: dict[str, Any], **sections: Any) -> Path:
    """The default recipe with another dataset (and sections) in place, written to `folder`."""
    data = copy.deepcopy(BASE)
    data["dataset"] = dataset
    data.update(sections)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def npz(folder: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = folder / name
    np.savez(path, **arrays)
    return path


def dataset_splits(folder: Path, dataset: dict[str, Any]):
    """load_splits for a recipe's dataset section, its paths relative to `folder`."""
    from pydantic import TypeAdapter

    from onnxforge.recipe import DatasetSpec

    spec = TypeAdapter(DatasetSpec).validate_python(dataset, context={"base_dir": folder})
    return load_splits(spec)


def splits_of(folder: Path, **dataset: Any):
    """load_splits for an npz dataset in `folder`."""
    return dataset_splits(folder, {"source": "npz", "path": "data.npz", **dataset})


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)


def test_fractional_float_labels_are_a_regression_target_never_cast_or_stratified(
    tmp_path: Path, features: np.ndarray
) -> None:
    # every target value occurs once: stratifying by it would fail ("least populated class")
    target = np.linspace(-3.5, 7.25, len(features))
    npz(tmp_path, x=features, y=target)
    splits = splits_of(tmp_path)
    assert splits.task == "regression" and splits.num_classes == 0 and splits.output_size == 1
    assert splits.y_train.dtype == np.float32
    stored = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert np.allclose(np.sort(stored), target.astype(np.float32))  # nothing rounded or dropped
    assert len(splits.y_test) == 24 and len(splits.y_val) == 10


def test_integer_labels_are_classes_and_stay_stratified(
    tmp_path: Path, features: np.ndarray
) -> None:
    npz(tmp_path, x=features, y=np.repeat([0, 1, 2], 40))
    splits = splits_of(tmp_path)
    assert splits.task == "classification" and splits.num_classes == 3
    assert splits.y_train.dtype == np.int64
    assert np.bincount(splits.y_test).tolist() == [8, 8, 8]  # stratified: 24 test samples


def test_whole_number_floats_read_as_classes_unless_the_recipe_says_regression(
    tmp_path: Path, features: np.ndarray
) -> None:
    counts = np.arange(len(features), dtype=np.float64)  # e.g. a count target: 0.0, 1.0, ...
    npz(tmp_path, x=features, y=counts)
    with pytest.raises(RecipeError) as caught:
        splits_of(tmp_path)
    message = str(caught.value)
    assert message.startswith("dataset.labels: ") and "class(es) with a single sample" in message
    assert message.endswith("for a continuous target set dataset.task_type: regression")
    splits = splits_of(tmp_path, task_type="regression")
    assert splits.task == "regression" and splits.y_train.dtype == np.float32


def test_the_recipe_overrides_the_inferred_task(tmp_path: Path, features: np.ndarray) -> None:
    npz(tmp_path, x=features, y=np.repeat([0, 1], 60))
    assert splits_of(tmp_path, task_type="regression").task == "regression"
    none = splits_of(tmp_path, task_type="none")
    assert none.task == "none" and none.y_train is None and none.num_classes == 0
    with pytest.raises(RecipeError, match="dataset.task_type: classification needs labels"):
        splits_of(tmp_path, labels=None, task_type="classification")


def test_sklearn_diabetes_is_regression() -> None:
    recipe = load_recipe(DEFAULT_RECIPE, {"dataset": "{source: sklearn, name: diabetes}"})
    splits = load_splits(recipe.dataset)
    assert splits.task == "regression" and splits.y_train.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "dataset"),
    [
        ({}, {}),  # labels omitted and the file has no `y`
        ({"y": np.zeros(120)}, {"labels": None}),  # labels: null although `y` exists
    ],
)
def test_an_npz_file_can_be_label_free(
    tmp_path: Path, features: np.ndarray, arrays: dict, dataset: dict
) -> None:
    npz(tmp_path, x=features, **arrays)
    splits = splits_of(tmp_path, **dataset)
    assert splits.task == "none" and splits.y_train is None and splits.y_test is None
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 120


def test_a_label_name_the_recipe_sets_must_exist(tmp_path: Path, features: np.ndarray) -> None:
    npz(tmp_path, x=features)
    with pytest.raises(RecipeError, match="has no array named 'target'"):
        splits_of(tmp_path, labels="target")


def test_a_csv_file_without_a_label_column_is_label_free(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) ** 2}).to_csv(tmp_path / "t.csv")
    dataset = {"source": "csv", "path": "t.csv", "features": ["a", "b"]}
    splits = dataset_splits(tmp_path, dataset)
    assert splits.task == "none" and splits.y_train is None and splits.x_train.shape[1] == 2


def test_label_free_data_cannot_be_trained_on(tmp_path: Path, features: np.ndarray) -> None:
    npz(tmp_path, x=features)
    declared = write_recipe(tmp_path, {"source": "npz", "path": "data.npz", "labels": None})
    with pytest.raises(RecipeError, match="train.enabled: the dataset has no labels to train on"):
        load_recipe(declared)
    inferred = write_recipe(tmp_path, {"source": "npz", "path": "data.npz"}, model=MLP)
    with pytest.raises(RecipeError, match="train.enabled: the dataset has no labels to train on"):
        load_and_check(str(inferred))


def test_synthetic_inputs_have_no_task_but_none(tmp_path: Path) -> None:
    dataset = {
        "source": "synthetic",
        "task_type": "regression",
        "inputs": [{"name": "input", "shape": ["batch", 4]}],
    }
    with pytest.raises(RecipeError, match="dataset.task_type: synthetic inputs have no labels"):
        load_recipe(write_recipe(tmp_path, dataset, train={"enabled": False}))


def test_preflight_accepts_negative_and_fractional_targets_and_refuses_nan(
    tmp_path: Path, features: np.ndarray
) -> None:
    target = features[:, 0] * 2.5 - 1.0  # negative and fractional values
    npz(tmp_path, x=features, y=target)
    recipe = write_recipe(tmp_path, {"source": "npz", "path": "data.npz"}, model=MLP)
    assert load_and_check(str(recipe)).dataset.source == "npz"

    target[7] = np.nan
    npz(tmp_path, x=features, y=target)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(recipe))
    assert str(caught.value).endswith(
        f"dataset.labels: {tmp_path / 'data.npz'} array 'y' has a NaN or infinite label (nan) "
        "at sample 7; expected finite numbers (regression targets)"
    )


def test_a_classifier_architecture_is_not_trained_on_a_regression_target(
    tmp_path: Path, features: np.ndarray
) -> None:
    labels = np.repeat([0.0, 1.0], 60)
    labels[7] = 0.5  # a stray fraction among class ids: most likely corrupt, not a target
    npz(tmp_path, x=features.reshape(-1, 1, 2, 2), y=labels)
    recipe = write_recipe(tmp_path, {"source": "npz", "path": "data.npz"})  # small_cnn
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(recipe))
    message = str(caught.value)
    assert "dataset.labels: " in message and "has a fractional label (0.5) at sample 7" in message
    assert message.endswith("(train.enabled: false)")

    declared = write_recipe(
        tmp_path, {"source": "npz", "path": "data.npz", "task_type": "regression"}
    )
    with pytest.raises(RecipeError, match="train.enabled: pytorch model 'small_cnn' is trained"):
        load_and_check(str(declared))


def test_preflight_refuses_a_model_whose_output_does_not_match_the_target(
    tmp_path: Path,
) -> None:
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path, external_data=False)  # digits: 10 scores per sample
    images = np.random.default_rng(0).uniform(size=(60, 1, 8, 8)).astype(np.float32)
    npz(tmp_path, x=images, y=images.mean(axis=(1, 2, 3)))
    recipe = write_recipe(
        tmp_path,
        {"source": "npz", "path": "data.npz"},
        model={"framework": "onnx", "file": str(model_file)},
        train={"enabled": False},
        export={"opset": 18, "dynamic_axes": {0: "batch"}},
    )
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(recipe))
    assert str(caught.value).endswith(
        f"dataset.labels: the regression target has 1 value(s) per sample, but model "
        f"{str(model_file)!r} outputs 10"
    )


def test_classification_labels_still_refuse_fractions_and_negatives(
    tmp_path: Path, features: np.ndarray
) -> None:
    npz(tmp_path, x=features, y=np.repeat([0.0, -1.0], 60))
    with pytest.raises(RecipeError, match="a negative label") as caught:
        splits_of(tmp_path)
    assert "set dataset.task_type: regression" in str(caught.value)
    npz(tmp_path, x=features, y=np.repeat([0.0, 0.5], 60))
    with pytest.raises(RecipeError, match="a fractional label"):
        splits_of(tmp_path, task_type="classification")


def _parity(reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None):
    return compare_outputs(
        "int8-dynamic",
        [reference],
        [output],
        labels,
        ParityBar(VARIANTS["int8-dynamic"].default_tolerance, 0.05),
    )


def test_regression_parity_reports_mae_rmse_and_never_top1() -> None:
    rng = np.random.default_rng(1)
    target = rng.normal(size=(200, 3)).astype(np.float32)  # three targets per sample
    reference = target + rng.normal(scale=0.1, size=target.shape).astype(np.float32)
    result = _parity(reference, reference + 1e-4, target)
    assert result.passed, result.failures
    assert result.rmse is not None and 0.05 < result.rmse < 0.2 and result.mae < result.rmse
    assert result.top1_agreement is None and result.accuracy is None

    label_free = _parity(reference, reference + 1e-4, None)
    assert label_free.rmse is None and label_free.accuracy is None


def test_regression_floors_hold_the_rmse_to_the_mean_predictor() -> None:
    register = RegisterSpec(model_name="floors")
    from onnxforge.records import ParityResult

    y_train = np.linspace(0.0, 10.0, 100).astype(np.float32)
    y_test = np.linspace(0.0, 10.0, 40).astype(np.float32)  # std about 2.96 around the mean 5
    good = ParityResult(variant="fp32", passed=True, rmse=0.5)
    bad = ParityResult(variant="fp32", passed=True, rmse=3.5)
    assert floor_failures(register, good, y_train, y_test) == []
    (reason,) = floor_failures(register, bad, y_train, y_test)
    assert reason.startswith("RMSE 3.5 is not below 2.9")
    assert reason.endswith("always predicting the training split's mean target")
    ceiling = register.model_copy(update={"max_rmse": 0.25})
    assert floor_failures(ceiling, good, y_train, y_test) == [
        "RMSE 0.5 is above register.max_rmse 0.25"
    ]


def test_an_mlp_trains_on_a_regression_target_with_mse(tmp_path: Path) -> None:
    from onnxforge.training import final_metrics, train_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=400)
    npz(tmp_path, x=x, y=y)
    path = write_recipe(
        tmp_path,
        {"source": "npz", "path": "data.npz"},
        model=MLP,
        train={"epochs": 30, "batch_size": 32, "learning_rate": 0.01, "seed": 0},
    )
    epochs: list[dict[str, float]] = []
    recipe = load_recipe(path)
    result = train_model(recipe, tmp_path, lambda _, m: epochs.append(m), data_of(recipe))
    assert set(epochs[-1]) == {"loss", "rmse", "val_rmse"}
    assert result.test_accuracy is None and result.val_accuracy is None
    spread = float(np.std(y))  # about 2.5: the RMSE of predicting the mean
    assert result.test_rmse is not None and result.test_rmse < 0.3 * spread
    metrics = final_metrics(result, reused=False)
    assert metrics["train.test_rmse"] == result.test_rmse
    assert metrics["train.test_accuracy"] is None
