"""Quality floors: what a variant must clear before it may become champion at all.

Parity only says a variant matches its source model; a model trained with learning_rate=1e6
matches its own garbage. The floors hold the variant to the labels: the recipe's min_accuracy and
max_rmse, and a floor nobody has to configure: a classifier must be significantly better than
always predicting the training split's majority class, a regression model must have a lower RMSE
than always predicting the training split's mean target.
"""

from __future__ import annotations

import numpy as np

from onnxforge.recipe import RegisterSpec
from onnxforge.records import ParityResult
from onnxforge.scoring import task_of


def majority_share(y_train: np.ndarray, y_test: np.ndarray) -> tuple[int, float]:
    """The training split's most frequent label (the smallest on a tie) and its share of the test
    split: the accuracy of always predicting it."""
    values, counts = np.unique(np.asarray(y_train), return_counts=True)
    majority = values[int(counts.argmax())]
    return int(majority), float((np.asarray(y_test) == majority).mean())


def _majority_floor(
    result: ParityResult, y_train: np.ndarray, y_test: np.ndarray, p_max: float
) -> str | None:
    """One-sided binomial test of the test hits against the majority-class share."""
    from scipy.stats import binomtest

    n = len(y_test)
    k = int(round(result.accuracy * n))
    majority, share = majority_share(y_train, y_test)
    p_value = float(binomtest(k, n, share, alternative="greater").pvalue)
    if p_value < p_max:
        return None
    return (
        f"accuracy {result.accuracy:.4f} ({k}/{n}) is not significantly better than always "
        f"predicting class {majority} ({share:.4f}; binomial p={p_value:.2g} >= {p_max:g})"
    )


def _mean_floor(rmse: float, y_train: np.ndarray, y_test: np.ndarray) -> str | None:
    """A regression model must beat always predicting the training split's mean target."""
    mean = np.asarray(y_train, dtype=np.float64).mean(axis=0)
    baseline = float(np.sqrt(((np.asarray(y_test, dtype=np.float64) - mean) ** 2).mean()))
    if rmse < baseline:
        return None
    return (
        f"RMSE {rmse:.4g} is not below {baseline:.4g}, the RMSE of always predicting the "
        "training split's mean target"
    )


def _configured_floors(register: RegisterSpec, result: ParityResult) -> list[str]:
    """register.min_accuracy and register.max_rmse; a floor set but not measured is a reason."""
    reasons = []
    if register.min_accuracy is not None:
        if result.accuracy is None:
            reasons.append(
                f"register.min_accuracy {register.min_accuracy:g} is set but no accuracy was "
                "measured (the first output is not class scores)"
            )
        elif result.accuracy < register.min_accuracy:
            reasons.append(
                f"accuracy {result.accuracy:.4f} is below register.min_accuracy "
                f"{register.min_accuracy:g}"
            )
    if register.max_rmse is not None:
        if result.rmse is None:
            reasons.append(
                f"register.max_rmse {register.max_rmse:g} is set but no RMSE was measured "
                "(it needs a regression task and one output value per target value)"
            )
        elif result.rmse > register.max_rmse:
            reasons.append(
                f"RMSE {result.rmse:.4g} is above register.max_rmse {register.max_rmse:g}"
            )
    return reasons


def floor_failures(
    register: RegisterSpec,
    result: ParityResult,
    y_train: np.ndarray | None,
    y_test: np.ndarray | None,
) -> list[str]:
    """Why the variant is below a quality floor; empty when it clears every one (or there are
    no labels, so nothing can be measured)."""
    if y_test is None or len(y_test) == 0:
        return []
    reasons = _configured_floors(register, result)
    if result.accuracy is None and result.rmse is None:
        # e.g. a single-logit binary classifier: labels exist, but no quality number could be
        # computed for this output shape, so nothing shows the model learned anything
        reasons.append("the test split has labels but neither accuracy nor RMSE could be measured")
    has_train = y_train is not None and len(y_train) > 0
    task = task_of(y_test)
    if task == "classification" and result.accuracy is not None and has_train:
        majority = _majority_floor(result, y_train, y_test, register.floor_p_value)
        reasons += [majority] if majority else []
    if task == "regression" and result.rmse is not None and has_train:
        mean = _mean_floor(result.rmse, y_train, y_test)
        reasons += [mean] if mean else []
    return reasons
