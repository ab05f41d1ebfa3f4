"""Parity: every variant against the source model on the test split, as a typed contract
(the clauses are in onnxforge/parity_clauses.py)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxforge.batching import run_accepted
from onnxforge.data_record import DataRecord, read_splits
from onnxforge.inputs import Features, take
from onnxforge.parity_clauses import (
    class_quality,
    degenerate_failures,
    output_parity,
    regression_quality,
    structure_failures,
    tolerance_failures,
)
from onnxforge.profiles import DEFAULT, RuntimeProfile, labelled, op_types
from onnxforge.providers import PROVIDERS
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import ModelArtifact, ParityFailure, ParityResult
from onnxforge.runtime import ProviderRejected, make_session
from onnxforge.scoring import is_class_scores, matches_targets, task_of
from onnxforge.tool_errors import ort_errors
from onnxforge.variants import VARIANTS, Tolerance

PLAIN = RuntimeProfile(name=DEFAULT)  # ONNX Runtime's session as it comes


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
    profile: RuntimeProfile = PLAIN,
) -> ParityResult:
    """Run one variant on its parity provider, in a session built by `profile`, and hold it to
    its tolerance."""
    provider = parity_provider(recipe.benchmark, artifact.variant)
    named = {"variant": artifact.variant, "profile": profile.name}
    if provider is None:
        return _fail(
            **named,
            kind="not_run",
            message=f"{artifact.variant} is a GPU variant and no requested GPU provider is available",
        )
    try:
        outputs, names = profile_outputs(artifact, provider, profile, features)
    except ort_errors() as error:  # ORT refused the variant: it fails parity, typed; our bugs raise
        return _fail(**named, kind="not_run", message=f"could not run on {provider}: {error}")
    bar = ParityBar(recipe.tolerance(artifact.variant), recipe.parity.accuracy_drop_budget)
    result = compare_outputs(artifact.variant, reference, outputs, labels, bar, names)
    return result.model_copy(update={"profile": profile.name})


def profile_outputs(
    artifact: ModelArtifact, provider: str, profile: RuntimeProfile, features: Features
) -> tuple[list[np.ndarray], list[str]]:
    """Every output of `artifact` over `features` and the output names, from a session built by
    `profile`: here for the pinned build, in the profile's own interpreter for another build."""
    if profile.python is None:
        session = make_session(artifact.path, provider, settings=profile.settings())
        # a fixed batch is fed at the size it declares
        return run_accepted(session, features), [o.name for o in session.get_outputs()]
    from onnxforge.benchmark import Contender, one_shot
    from onnxforge.inputs import save

    with tempfile.TemporaryDirectory(prefix="onnxforge-parity-") as folder:
        fed, out = Path(folder) / "features.npz", Path(folder) / "outputs.npz"
        save(features, fed)
        load = {"path": artifact.path, "provider": provider, "settings": profile.settings()}
        contender = Contender(
            labelled(artifact.variant, profile.name), "run", load, None, profile.python
        )
        reply = one_shot(
            contender, "--outputs", {**load, "features": str(fed), "out": str(out)}, "parity"
        )
        if not reply["ok"]:
            raise ProviderRejected(reply["error"])
        with np.load(out) as arrays:
            return [arrays[str(i)] for i in range(len(reply["names"]))], reply["names"]


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
        for profile in parity_profiles(recipe.benchmark, artifact):
            result = check_variant(
                recipe, artifact, splits.x_test, splits.y_test, reference, profile
            )
            parent = by_variant.get(artifact.parent or "")
            if not result.passed and VARIANTS[artifact.variant].quantized and parent is not None:
                sample = take(splits.x_test, slice(0, 64))
                drift = drifting_layers(parent.path, artifact.path, sample)
                result = result.model_copy(update={"drifting_layers": tuple(drift)})
            results.append(result)
    return results


def parity_profiles(spec: BenchmarkSpec, artifact: ModelArtifact) -> list[RuntimeProfile]:
    """The profiles a variant's parity is checked under: those the benchmark may time it with
    (on any of its providers), each applied on the parity provider; at least the plain one."""
    ops = op_types(artifact.path) if any(p.when_ops for p in spec.profiles) else set()
    tried = [p for p in spec.profiles if any(p.applies_to(ops, name) for name in spec.providers)]
    return tried or [PLAIN]
