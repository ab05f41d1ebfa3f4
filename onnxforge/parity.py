"""Parity: every variant against the source model on the test split, as a typed contract."""

from __future__ import annotations

import numpy as np

from onnxforge.inputs import take
from onnxforge.providers import PROVIDERS
from onnxforge.recipe import Recipe
from onnxforge.records import ModelArtifact, OutputParity, ParityFailure, ParityResult
from onnxforge.runtime import make_session, run_batched
from onnxforge.variants import VARIANTS, Tolerance


def _fail(variant: str, kind: str, message: str, **numbers: object) -> ParityResult:
    failure = ParityFailure(kind=kind, message=message)
    return ParityResult(variant=variant, passed=False, failures=(failure,), **numbers)


def _structure_failures(
    names: list[str], reference: list[np.ndarray], outputs: list[np.ndarray]
) -> list[ParityFailure]:
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


def _output_parity(name: str, expected: np.ndarray, got: np.ndarray) -> OutputParity:
    error = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    scale = max(float(np.abs(expected).max()), 1e-12)
    return OutputParity(
        name=name,
        max_abs_err=float(error.max()),
        mean_abs_err=float(error.mean()),
        rel_err=float(error.max()) / scale,
    )


def _tolerance_failures(
    per_output: list[OutputParity], tolerance: Tolerance
) -> list[ParityFailure]:
    failures = []
    for out in per_output:
        if out.max_abs_err > tolerance.atol:
            failures.append(
                ParityFailure(
                    kind="tolerance_exceeded",
                    message=f"{out.name}: max abs error {out.max_abs_err:.3g} > atol {tolerance.atol}",
                )
            )
        if out.mean_abs_err > tolerance.mean_atol:
            failures.append(
                ParityFailure(
                    kind="tolerance_exceeded",
                    message=f"{out.name}: mean abs error {out.mean_abs_err:.3g} > mean_atol {tolerance.mean_atol}",
                )
            )
        if tolerance.rtol is not None and out.rel_err > tolerance.rtol:
            failures.append(
                ParityFailure(
                    kind="tolerance_exceeded",
                    message=f"{out.name}: relative error {out.rel_err:.3g} > rtol {tolerance.rtol}",
                )
            )
    return failures


def compare_outputs(
    variant: str,
    reference: list[np.ndarray],
    outputs: list[np.ndarray],
    labels: np.ndarray | None,
    tolerance: Tolerance,
    accuracy_drop_budget: float,
    names: list[str] | None = None,
) -> ParityResult:
    """Score a variant's outputs against the source's; every broken clause is a typed failure."""
    names = names or [f"output{i}" for i in range(len(reference))]
    failures = _structure_failures(names, reference, outputs)
    if failures:
        return ParityResult(variant=variant, passed=False, failures=tuple(failures))
    per_output = [
        _output_parity(n, e, g) for n, e, g in zip(names, reference, outputs, strict=False)
    ]
    failures = _tolerance_failures(per_output, tolerance)
    agreement = None
    if reference[0].ndim == 2:  # class scores: top-1 agreement means something
        agreement = float((reference[0].argmax(1) == outputs[0].argmax(1)).mean())
    if agreement is not None and agreement < tolerance.min_top1_agreement:
        failures.append(
            ParityFailure(
                kind="top1_below_floor",
                message=f"top-1 agreement {agreement:.4f} < {tolerance.min_top1_agreement}",
            )
        )
    accuracy = source_accuracy = None
    if labels is not None and agreement is not None:
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
        max_abs_err=max(o.max_abs_err for o in per_output),
        mean_abs_err=float(np.mean([o.mean_abs_err for o in per_output])),
        top1_agreement=agreement,
        accuracy=accuracy,
        source_accuracy=source_accuracy,
        per_output=tuple(per_output),
    )


def parity_provider(recipe: Recipe, variant: str) -> str | None:
    """Where a variant's parity is measured: CPU, or for GPU variants the first GPU provider here."""
    if VARIANTS[variant].device == "any":
        return "CPUExecutionProvider"
    for name in recipe.benchmark.providers:
        spec = PROVIDERS[name]
        if spec.runs_gpu_variants and spec.unavailable_reason() is None:
            return name
    return None


def check_variant(
    recipe: Recipe,
    artifact: ModelArtifact,
    features: np.ndarray,
    labels: np.ndarray | None,
    reference: list[np.ndarray],
) -> ParityResult:
    """Run one variant on its parity provider and hold it to its tolerance."""
    provider = parity_provider(recipe, artifact.variant)
    if provider is None:
        return _fail(
            artifact.variant,
            "not_run",
            f"{artifact.variant} is a GPU variant and no requested GPU provider is available",
        )
    try:
        session = make_session(artifact.path, provider)
        outputs = run_batched(session, features)
        names = [o.name for o in session.get_outputs()]
    except Exception as error:  # noqa: BLE001 - a variant that cannot run fails parity, typed
        return _fail(artifact.variant, "not_run", f"could not run on {provider}: {error}")
    return compare_outputs(
        artifact.variant,
        reference,
        outputs,
        labels,
        recipe.tolerance(artifact.variant),
        recipe.parity.accuracy_drop_budget,
        names,
    )


def check_all(
    recipe: Recipe, checkpoint: str, artifacts: list[ModelArtifact]
) -> list[ParityResult]:
    """Parity of every variant against the checkpointed source model on the test split; a failing
    quantized variant carries the layers whose outputs drift most from its float parent."""
    from onnxforge.adapters import get_adapter
    from onnxforge.datasets import load_splits
    from onnxforge.drift import drifting_layers
    from onnxforge.training import load_source_model

    splits = load_splits(recipe.dataset)
    model = load_source_model(recipe, checkpoint, splits)
    reference = get_adapter(recipe.model.framework).predict(model, splits.x_test)
    by_variant = {a.variant: a for a in artifacts}
    results = []
    for artifact in artifacts:
        result = check_variant(recipe, artifact, splits.x_test, splits.y_test, reference)
        parent = by_variant.get(artifact.parent or "")
        if not result.passed and VARIANTS[artifact.variant].quantized and parent is not None:
            drift = drifting_layers(parent.path, artifact.path, take(splits.x_test, slice(0, 64)))
            result = result.model_copy(update={"drifting_layers": tuple(drift)})
        results.append(result)
    return results
