"""Quality floors: min_accuracy, max_rmse, and beating the majority class with significance."""

from __future__ import annotations

import numpy as np
import pytest

from onnxforge.datasets import Splits, load_splits
from onnxforge.floors import floor_failures, majority_share
from onnxforge.recipe import RegisterSpec, load_recipe
from onnxforge.records import ParityResult
from tests.conftest import DEFAULT_RECIPE

REGISTER = RegisterSpec(model_name="floors")


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits(load_recipe(DEFAULT_RECIPE).dataset)


def scored(accuracy: float | None = None, rmse: float | None = None) -> ParityResult:
    return ParityResult(variant="int8-dynamic", passed=True, accuracy=accuracy, rmse=rmse)


def test_a_ten_percent_classifier_is_below_the_majority_floor(digits: Splits) -> None:
    majority, share = majority_share(digits.y_train, digits.y_test)
    assert (majority, share) == (1, 0.1)  # digits: ten near-equal classes, 360 test samples
    (reason,) = floor_failures(REGISTER, scored(0.1), digits.y_train, digits.y_test)
    assert reason == (
        "accuracy 0.1000 (36/360) is not significantly better than always predicting class 1 "
        "(0.1000; binomial p=0.53 >= 0.01)"
    )
    assert floor_failures(REGISTER, scored(0.975), digits.y_train, digits.y_test) == []


def test_the_majority_floor_follows_the_class_balance() -> None:
    """90% of one class: a 90% classifier is no better than the constant; 97% is."""
    y_train = np.array([0] * 900 + [1] * 100)
    y_test = np.array([0] * 180 + [1] * 20)
    (reason,) = floor_failures(REGISTER, scored(0.9), y_train, y_test)
    assert "always predicting class 0 (0.9000;" in reason
    assert floor_failures(REGISTER, scored(0.97), y_train, y_test) == []
    lenient = REGISTER.model_copy(update={"floor_p_value": 0.9})
    assert floor_failures(lenient, scored(0.9), y_train, y_test) == []


def test_min_accuracy_is_a_floor(digits: Splits) -> None:
    register = REGISTER.model_copy(update={"min_accuracy": 0.99})
    reasons = floor_failures(register, scored(0.975), digits.y_train, digits.y_test)
    assert reasons == ["accuracy 0.9750 is below register.min_accuracy 0.99"]
    assert floor_failures(register, scored(0.995), digits.y_train, digits.y_test) == []


def test_max_rmse_is_a_ceiling() -> None:
    register = REGISTER.model_copy(update={"max_rmse": 0.5})
    y = np.linspace(0.0, 3.0, 50)
    assert floor_failures(register, scored(rmse=0.7), y, y) == [
        "RMSE 0.7 is above register.max_rmse 0.5"
    ]
    assert floor_failures(register, scored(rmse=0.3), y, y) == []
    unmeasured = floor_failures(register, scored(), y, y)
    assert len(unmeasured) == 2 and "no RMSE was measured" in unmeasured[0]


def test_labels_with_no_measurable_quality_never_clear_the_floors() -> None:
    # e.g. a single-logit binary classifier: (N, 1) outputs and integer labels
    labels = np.array([0, 1] * 30)
    assert floor_failures(REGISTER, scored(), labels, labels) == [
        "the test split has labels but neither accuracy nor RMSE could be measured"
    ]


def test_without_labels_there_is_nothing_to_measure() -> None:
    register = REGISTER.model_copy(update={"min_accuracy": 0.99, "max_rmse": 0.1})
    assert floor_failures(register, scored(), None, None) == []
    assert floor_failures(register, scored(0.1, 9.0), None, None) == []
