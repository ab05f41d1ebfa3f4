"""The clauses of the parity contract, each a function returning typed failures.

Garbage must not pass: an output that is the same for every sample fails (degenerate_output),
a tie for the top score is never agreement, and the error bounds are read in units of each
reference output's spread (its std over the test split), so an all-zero output fails on
probabilities as it does on logits.
"""

from __future__ import annotations

import numpy as np

from onnxforge.records import OutputParity, ParityFailure
from onnxforge.scoring import (
    TINY,
    accuracy,
    agreement,
    is_continuous,
    is_degenerate,
    mae_rmse,
    spread,
)
from onnxforge.variants import Tolerance


def structure_failures(
    names: list[str], reference: list[np.ndarray], outputs: list[np.ndarray]
) -> list[ParityFailure]:
    """Missing outputs, wrong shapes, NaN or Inf: nothing else can be measured past these."""
    failures = []
    if len(outputs) < len(reference):
        missing = ", ".join(names[len(outputs) :]) or f"{len(reference) - len(outputs)} outputs"
        failures.append(
            ParityFailure(kind="output_missing", message=f"variant lacks output {missing}")
        )
        return failures
    for name, expected, got in zip(names, reference, outputs, strict=False):
        if expected.shape != got.shape:
            failures.append(
                ParityFailure(
                    kind="shape_mismatch",
                    message=f"{name}: expected shape {expected.shape}, got {got.shape}",
                )
            )
        elif not np.isfinite(got).all():
            failures.append(ParityFailure(kind="non_finite", message=f"{name}: holds NaN or Inf"))
    return failures


def degenerate_failures(names: list[str], outputs: list[np.ndarray]) -> list[ParityFailure]:
    """Outputs that are the same for every test sample: the model ignores its input."""
    return [
        ParityFailure(
            kind="degenerate_output",
            message=f"{name}: the same value for all {len(got)} test samples "
            "(the output does not depend on the input)",
        )
        for name, got in zip(names, outputs, strict=False)
        if is_degenerate(got)
    ]


def output_parity(name: str, expected: np.ndarray, got: np.ndarray) -> OutputParity:
    """Absolute errors of one output, and the same in units of the reference's spread."""
    error = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    scale = max(float(np.abs(expected).max()), TINY)
    spread_ = spread(expected)
    return OutputParity(
        name=name,
        max_abs_err=float(error.max()),
        mean_abs_err=float(error.mean()),
        rel_err=float(error.max()) / scale,
        spread=spread_,
        max_spread_err=float(error.max()) / spread_,
        mean_spread_err=float(error.mean()) / spread_,
    )


def _bound_failure(out: OutputParity, which: str, tolerance: Tolerance) -> ParityFailure | None:
    """The max or mean error bound of one output, in the tolerance's form; the message says
    which form failed."""
    key = "atol" if which == "max" else "mean_atol"
    limit = getattr(tolerance, key)
    absolute, in_spreads = getattr(out, f"{which}_abs_err"), getattr(out, f"{which}_spread_err")
    what = f"{which} abs error {absolute:.3g}"
    if tolerance.scale == "spread" and in_spreads > limit:
        message = f"{what} = {in_spreads:.3g} x spread > {key} {limit:g} x spread"
        message += f" (spread {out.spread:.3g})"
    elif tolerance.scale == "absolute" and absolute > limit:
        message = f"{what} > {key} {limit:g} (absolute)"
    else:
        return None
    return ParityFailure(kind="tolerance_exceeded", message=f"{out.name}: {message}")


def tolerance_failures(per_output: list[OutputParity], tolerance: Tolerance) -> list[ParityFailure]:
    """Every output's max and mean error bounds, and the optional relative bound."""
    failures = []
    for out in per_output:
        failures += [f for w in ("max", "mean") if (f := _bound_failure(out, w, tolerance))]
        if tolerance.rtol is not None and out.rel_err > tolerance.rtol:
            failures.append(
                ParityFailure(
                    kind="tolerance_exceeded",
                    message=f"{out.name}: relative error {out.rel_err:.3g} > rtol {tolerance.rtol}",
                )
            )
    return failures


def class_quality(
    expected: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray | None,
    tolerance: Tolerance,
    budget: float,
) -> tuple[dict[str, float], list[ParityFailure]]:
    """Top-1 agreement (ties never agree) and the accuracy drop, for class scores."""
    numbers = {"top1_agreement": agreement(expected, got)}
    failures = []
    if numbers["top1_agreement"] < tolerance.min_top1_agreement:
        failures.append(
            ParityFailure(
                kind="top1_below_floor",
                message=f"top-1 agreement {numbers['top1_agreement']:.4f} < "
                f"{tolerance.min_top1_agreement} (a tie for the top score never agrees)",
            )
        )
    if labels is not None:
        mine, theirs = accuracy(got, labels), accuracy(expected, labels)
        numbers.update(accuracy=mine, source_accuracy=theirs)
        if theirs - mine > budget:
            failures.append(
                ParityFailure(
                    kind="accuracy_drop",
                    message=f"accuracy {mine:.4f} is {theirs - mine:.4f} below the source's "
                    f"{theirs:.4f} (budget {budget})",
                )
            )
    return numbers, failures


def regression_quality(
    expected: np.ndarray, got: np.ndarray, labels: np.ndarray | None, budget: float
) -> tuple[dict[str, float], list[ParityFailure]]:
    """MAE and RMSE against float labels; the budget bounds the relative RMSE increase."""
    if not is_continuous(labels):
        return {}, []
    mae, rmse = mae_rmse(got, labels)
    source_mae, source_rmse = mae_rmse(expected, labels)
    numbers = {"mae": mae, "rmse": rmse, "source_mae": source_mae, "source_rmse": source_rmse}
    if rmse > source_rmse * (1 + budget):
        increase = rmse / max(source_rmse, TINY) - 1
        return numbers, [
            ParityFailure(
                kind="accuracy_drop",
                message=f"RMSE {rmse:.4g} is {increase:.2%} above the source's {source_rmse:.4g} "
                f"(budget {budget:.2%} relative)",
            )
        ]
    return numbers, []
