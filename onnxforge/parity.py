"""Parity: every variant against the source model on the test split, as a typed contract."""

from __future__ import annotations

import numpy as np

from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, ParityFailure, ParityResult
from onnxforge.runtime import ProviderRejected, make_session, run_batched
from onnxforge.variants import Tolerance


def compare_outputs(
    variant: str,
    reference: list[np.ndarray],
    outputs: list[np.ndarray],
    labels: np.ndarray | None,
    tolerance: Tolerance,
    accuracy_drop_budget: float,
) -> ParityResult:
    """Score a variant's outputs against the source's; every broken clause is a typed failure."""
    failures: list[ParityFailure] = []
    if len(outputs) < len(reference):
        failures.append(
            ParityFailure(
                kind="output_missing",
                message=f"expected {len(reference)} outputs, the variant gave {len(outputs)}",
            )
        )
        return ParityResult(variant=variant, passed=False, failures=tuple(failures))
    for index, (expected, got) in enumerate(zip(reference, outputs, strict=False)):
        if expected.shape != got.shape:
            failures.append(
                ParityFailure(
                    kind="shape_mismatch",
                    message=f"output {index}: expected shape {expected.shape}, got {got.shape}",
                )
            )
    if failures:
        return ParityResult(variant=variant, passed=False, failures=tuple(failures))
    if not all(np.isfinite(out).all() for out in outputs):
        failures.append(ParityFailure(kind="non_finite", message="outputs hold NaN or Inf"))
        return ParityResult(variant=variant, passed=False, failures=tuple(failures))

    errors = np.concatenate(
        [np.abs(e - g).ravel() for e, g in zip(reference, outputs, strict=False)]
    )
    max_abs, mean_abs = float(errors.max()), float(errors.mean())
    agreement = float((reference[0].argmax(1) == outputs[0].argmax(1)).mean())
    if max_abs > tolerance.atol:
        failures.append(
            ParityFailure(
                kind="tolerance_exceeded",
                message=f"max abs error {max_abs:.3g} > atol {tolerance.atol}",
            )
        )
    if mean_abs > tolerance.mean_atol:
        failures.append(
            ParityFailure(
                kind="tolerance_exceeded",
                message=f"mean abs error {mean_abs:.3g} > mean_atol {tolerance.mean_atol}",
            )
        )
    if agreement < tolerance.min_top1_agreement:
        failures.append(
            ParityFailure(
                kind="top1_below_floor",
                message=f"top-1 agreement {agreement:.4f} < {tolerance.min_top1_agreement}",
            )
        )
    accuracy = source_accuracy = None
    if labels is not None:
        accuracy = float((outputs[0].argmax(1) == labels).mean())
        source_accuracy = float((reference[0].argmax(1) == labels).mean())
        if source_accuracy - accuracy > accuracy_drop_budget:
            failures.append(
                ParityFailure(
                    kind="accuracy_drop",
                    message=f"accuracy {accuracy:.4f} is {source_accuracy - accuracy:.4f} below the "
                    f"source's {source_accuracy:.4f} (budget {accuracy_drop_budget})",
                )
            )
    return ParityResult(
        variant=variant,
        passed=not failures,
        failures=tuple(failures),
        max_abs_err=max_abs,
        mean_abs_err=mean_abs,
        top1_agreement=agreement,
        accuracy=accuracy,
        source_accuracy=source_accuracy,
    )


def check_variant(
    recipe: Recipe,
    artifact: ModelArtifact,
    features: np.ndarray,
    labels: np.ndarray | None,
    reference: list[np.ndarray],
) -> ParityResult:
    """Run one variant on ONNX Runtime's CPU provider and hold it to its tolerance."""
    try:
        session = make_session(artifact.path, "CPUExecutionProvider")
        outputs = run_batched(session, features)
    except (ProviderRejected, Exception) as error:  # noqa: BLE001 - a crash is a parity failure
        failure = ParityFailure(kind="output_missing", message=f"could not run on CPU: {error}")
        return ParityResult(variant=artifact.variant, passed=False, failures=(failure,))
    return compare_outputs(
        artifact.variant,
        reference,
        outputs,
        labels,
        recipe.tolerance(artifact.variant),
        recipe.parity.accuracy_drop_budget,
    )


def check_all(
    recipe: Recipe, checkpoint: str, artifacts: list[ModelArtifact]
) -> list[ParityResult]:
    """Parity of every variant against the checkpointed source model on the test split."""
    from onnxforge.adapters import get_adapter
    from onnxforge.datasets import load_splits
    from onnxforge.training import load_source_model

    splits = load_splits(recipe.dataset)
    model = load_source_model(recipe, checkpoint, splits)
    reference = [get_adapter(recipe.model.framework).predict(model, splits.x_test)]
    return [
        check_variant(recipe, artifact, splits.x_test, splits.y_test, reference)
        for artifact in artifacts
    ]
