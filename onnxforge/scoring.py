"""How outputs are scored against labels and against each other: the one definition of top-1,
accuracy, regression error and a degenerate (input-independent) output, shared by training and
parity."""

from __future__ import annotations

import numpy as np

# An output whose values move by less than this share of its magnitude across every sample of
# the test split ignores its input. float32 resolves ~1.2e-7 relative, so 1e-6 is a few ulps.
CONSTANT_RELATIVE_EPS = 1e-6
TINY = 1e-12  # floor for magnitudes and spreads, so an all-zero reference never divides by zero


def is_class_scores(output: np.ndarray) -> bool:
    """One row of at least two scores per sample: top-1 and accuracy mean something."""
    return output.ndim == 2 and output.shape[1] >= 2


def is_continuous(labels: np.ndarray | None) -> bool:
    """Float labels: regression targets, not class ids."""
    return labels is not None and np.asarray(labels).dtype.kind == "f"


def task_of(labels: np.ndarray | None) -> str:
    """The task the split labels stand for: none without labels, regression for float targets
    (datasets.py stores them as float32), classification for integer class ids."""
    if labels is None:
        return "none"
    return "regression" if is_continuous(labels) else "classification"


def matches_targets(values: np.ndarray, labels: np.ndarray) -> bool:
    """The output has as many values per sample as the regression target."""
    return len(values) == len(labels) and values.size == np.asarray(labels).size


def top1(scores: np.ndarray) -> np.ndarray:
    """Each row's argmax, or -1 where the row has no unique maximum (a tie) or is not finite."""
    scores = np.asarray(scores)
    labels = scores.argmax(axis=1).astype(np.int64)
    # a tie is no prediction: a constant output would otherwise "agree" on class 0 every time
    first_two = np.sort(scores, axis=1)[:, -2:]
    tied = (
        first_two[:, -1] <= first_two[:, 0] if scores.shape[1] > 1 else np.zeros(len(scores), bool)
    )
    labels[tied | ~np.isfinite(scores).all(axis=1)] = -1
    return labels


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose unique top-1 is the label (a tie counts as wrong)."""
    predicted = top1(scores)
    return float(((predicted == labels) & (predicted >= 0)).mean())


def agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """Share of samples, among those where the source's top-1 is unique, where the variant's
    top-1 is unique and equal (a source tie has no answer to agree with; a variant tie never
    agrees). A source that ties everywhere gives 0.0 (and is degenerate anyway)."""
    expected, got = top1(reference), top1(output)
    decided = expected >= 0
    if not decided.any():
        return 0.0
    return float((expected[decided] == got[decided]).mean())


def mae_rmse(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean absolute and root-mean-square error over every target value (one or more per
    sample; the output is read in the targets' shape)."""
    targets = labels.astype(np.float64)
    error = values.astype(np.float64).reshape(targets.shape) - targets
    return float(np.abs(error).mean()), float(np.sqrt((error**2).mean()))


def spread(reference: np.ndarray) -> float:
    """Standard deviation of an output's values over the test split (floored at TINY)."""
    return max(float(reference.astype(np.float64).std()), TINY)


def is_degenerate(output: np.ndarray) -> bool:
    """The output is the same for every sample (within a tiny relative epsilon); needs >= 2."""
    flat = output.reshape(len(output), -1).astype(np.float64)
    if len(flat) < 2 or flat.shape[1] == 0:
        return False
    span = float(np.ptp(flat, axis=0).max())
    return span <= CONSTANT_RELATIVE_EPS * max(float(np.abs(flat).max()), TINY)
