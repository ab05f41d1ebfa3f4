"""Parity: every variant against the source model on the test split, as a typed contract
(the clauses are in onnxforge/parity_clauses.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxforge.batching import run_accepted
from onnxforge.data_record import DataRecord, read_splits
from onnxforge.inputs import take
from onnxforge.parity_clauses import (
    class_quality,
    degenerate_failures,
    output_parity,
    regression_quality,
    structure_failures,
    tolerance_failures,
)
from onnxforge.providers import PROVIDERS
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import ModelArtifact, ParityFailure, ParityResult
from onnxforge.runtime import make_session
from onnxforge.scoring import is_class_scores, matches_targets, task_of
from onnxforge.tool_errors import ort_errors
from onnxforge.variants import VARIANTS, Tolerance


def _fail(variant: str, kind: str, message: str, **numbers: object) -> ParityResult:
    failure = ParityFailure(kind=kind, message=message)
    return ParityResult(variant=variant, passed=False, failures=(failure,), **numbers)


@dataclass(frozen=True)
class ParityBar:
    """What a variant is held to: its output tolerance and the recipe's accuracy drop budget."""

    tolerance: Tolerance
    accuracy_drop_budget: float


def compare_outputs(
    variant: str,
    reference: list[np.ndarray],
    outputs: list[np.ndarray],
    labels: np.ndarray | None,
    bar: ParityBar,
    names: list[str] | None = None,
) -> ParityResult:
    """Score a variant's outputs against the source's; every broken clause is a typed failure."""
    tolerance, accuracy_drop_budget = bar.tolerance, bar.accuracy_drop_budget
    names = names or [f"output{i}" for i in range(len(reference))]
    failures = structure_failures(names, reference, outputs)
    if failures:
        return ParityResult(variant=variant, passed=False, failures=tuple(failures))
    per_output = [
        output_parity(n, e, g) for n, e, g in zip(names, reference, outputs, strict=False)
    ]
    failures = degenerate_failures(names, outputs) + tolerance_failures(per_output, tolerance)
    numbers: dict[str, float] = {}
    # The task comes from the labels (float targets: regression); the first output is scored.
    # A regression model never gets top-1 numbers, whatever its output shape.
    if task_of(labels) == "regression":
        if matches_targets(reference[0], labels):
            numbers, more = regression_quality(
                reference[0], outputs[0], labels, accuracy_drop_budget
            )
            failures += more
    elif is_class_scores(reference[0]):
        numbers, more = class_quality(
            reference[0], outputs[0], labels, tolerance, accuracy_drop_budget
        )
        failures += more
    return ParityResult(
        variant=variant,
        passed=not failures,
        failures=tuple(failures),
        max_abs_err=max(o.max_abs_err for o in per_output),
        mean_abs_err=float(np.mean([o.mean_abs_err for o in per_output])),
        per_output=tuple(per_output),
        max_spread_err=max(o.max_spread_err for o in per_output),
        mean_spread_err=float(np.mean([o.mean_spread_err for o in per_output])),
        **numbers,
    )


def parity_provider(spec: BenchmarkSpec, variant: str) -> str | None:
    """Where a variant's parity is measured: CPU, or for GPU variants the first of the
    benchmark's providers here that runs them."""
    if VARIANTS[variant].device == "any":
        return "CPUExecutionProvider"
    for name in spec.providers:
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
    provider = parity_provider(recipe.benchmark, artifact.variant)
    if provider is None:
        return _fail(
            artifact.variant,
            "not_run",
            f"{artifact.variant} is a GPU variant and no requested GPU provider is available",
        )
    try:
        session = make_session(artifact.path, provider)
        outputs = run_accepted(session, features)  # a fixed batch is fed at the size it declares
        names = [o.name for o in session.get_outputs()]
    except ort_errors() as error:  # ORT refused the variant: it fails parity, typed; our bugs raise
        return _fail(artifact.variant, "not_run", f"could not run on {provider}: {error}")
    bar = ParityBar(recipe.tolerance(artifact.variant), recipe.parity.accuracy_drop_budget)
    return compare_outputs(artifact.variant, reference, outputs, labels, bar, names)


def check_all(
    recipe: Recipe, checkpoint: str, artifacts: list[ModelArtifact], data: DataRecord
) -> list[ParityResult]:
    """Parity of every variant against the checkpointed source model on the test split (`data`:
    the run's DataRecord); a failing quantized variant carries the layers whose outputs drift most
    from its float parent."""
    from onnxforge.adapters import get_adapter
    from onnxforge.drift import drifting_layers
    from onnxforge.training import load_source_model

    splits = read_splits(data)
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
