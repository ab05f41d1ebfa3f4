"""Logging variants as MLflow LoggedModels, choosing the best one, registering and promoting it."""

from __future__ import annotations

import subprocess
from typing import Any

from onnxforge.metrics import PARITY_FIELDS, bench_metrics, objective_key, parity_metrics
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ModelArtifact, ParityResult, Registration
from onnxforge.tracking import RunContext, client, log_metrics

CHALLENGER, CHAMPION = "challenger", "champion"


def log_variant_models(
    context: RunContext,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    example: Any,
) -> dict[str, str]:
    """Log each variant as a LoggedModel with signature and input example; returns variant -> model id."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models import infer_signature

    from onnxforge.inputs import named
    from onnxforge.runtime import input_names, make_session

    client(context.tracking_uri)
    # Every variant keeps the export's inputs and outputs, so the fp32 export's outputs give the
    # signature for all (a GPU-only variant need not run here).
    reference = next(a for a in artifacts if a.variant == "fp32")
    session = make_session(reference.path, "CPUExecutionProvider")
    feed = named(example, input_names(session))
    example = feed if len(feed) > 1 else example  # several inputs: the signature names them
    outputs = session.run(None, feed)
    output_names = [o.name for o in session.get_outputs()]
    signature = infer_signature(
        example, outputs[0] if len(outputs) == 1 else dict(zip(output_names, outputs, strict=True))
    )
    model_ids = {}
    with mlflow.start_run(run_id=context.run_id):
        for artifact in artifacts:
            logged = mlflow.onnx.log_model(
                onnx.load(artifact.path),
                name=artifact.variant,
                signature=signature,
                input_example=example,
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
                tags={"variant": artifact.variant, "sha256": artifact.sha256},
            )
            mlflow.log_artifact(artifact.path, artifact_path="onnx")
            model_ids[artifact.variant] = logged.model_id
            variant_metrics = {
                **parity_metrics([p for p in parity if p.variant == artifact.variant]),
                **bench_metrics([b for b in bench if b.variant == artifact.variant]),
            }
            log_metrics(context, variant_metrics, model_id=logged.model_id)
    return model_ids


def best_per_provider(
    recipe: Recipe,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
) -> dict[str, tuple[str, float]]:
    """For each benchmarked provider: the passing variant with the lowest objective value."""
    objective = recipe.registry.objective
    passed = {p.variant for p in parity if p.passed}
    sizes = {a.variant: float(a.size_bytes) for a in artifacts}
    best: dict[str, tuple[str, float]] = {}
    for row in bench:
        if row.status != "ok" or row.variant not in passed:
            continue
        if objective.metric == "size_bytes":
            value = sizes[row.variant]
        elif row.batch_size == objective.batch_size:
            value = float(getattr(row, objective.metric))
        else:
            continue
        if row.provider not in best or value < best[row.provider][1]:
            best[row.provider] = (row.variant, value)
    return best


def choose_best(
    recipe: Recipe,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
) -> tuple[ModelArtifact | None, float | None, str]:
    """The objective provider's best passing variant, its objective value, and why."""
    provider = recipe.registry.objective.provider
    choice = best_per_provider(recipe, artifacts, parity, bench).get(provider)
    if choice is None:
        failed = [
            f"{p.variant}: {'; '.join(f.message for f in p.failures)}"
            for p in parity
            if not p.passed
        ]
        return (
            None,
            None,
            f"no variant passed parity and was measured on {provider}"
            + (f" ({' | '.join(failed)})" if failed else ""),
        )
    variant, value = choice
    return (
        next(a for a in artifacts if a.variant == variant),
        value,
        f"lowest {objective_key(recipe)} among the variants that passed parity",
    )


def version_tags(
    recipe: Recipe,
    context: RunContext,
    artifact: ModelArtifact,
    objective_value: float,
    parity: ParityResult,
    bench: list[BenchResult],
    dataset_hash: str,
) -> dict[str, str]:
    """Tags that make a registered version self-describing."""
    tags = {
        "variant": artifact.variant,
        "sha256": artifact.sha256,
        "size_bytes": str(artifact.size_bytes),
        "producer": artifact.producer,
        "parent": str(artifact.parent),
        "objective": objective_key(recipe),
        "objective_value": repr(objective_value),
        "source_run_id": context.run_id,
        "flow_run_id": context.flow_run_id,
        "code_commit": code_commit(),
        "dataset_hash": dataset_hash,
        "recipe": recipe.name,
    }
    for name in PARITY_FIELDS:
        if getattr(parity, name) is not None:
            tags[f"parity.{name}"] = repr(getattr(parity, name))
    for row in bench:
        if row.variant == artifact.variant and row.status == "ok":
            tags[f"p50_ms.{row.provider}.bs{row.batch_size}"] = f"{row.p50_ms:.4f}"
    return tags


def register_best(
    recipe: Recipe,
    context: RunContext,
    artifact: ModelArtifact,
    model_id: str,
    objective_value: float,
    accuracy: float | None,
    tags: dict[str, str],
) -> Registration:
    """New registry version with tags, alias challenger; champion moved per the promotion policy."""
    import mlflow

    name = recipe.registry.model_name
    mlflow_client = client(context.tracking_uri)
    champion = _current_champion(mlflow_client, name)
    version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    move, reason = promotion_decision(recipe, objective_value, accuracy, champion, tags)
    if move:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version.version)
    mlflow_client.set_model_version_tag(name, version.version, "promotion", reason)
    return Registration(
        model_name=name,
        version=str(version.version),
        variant=artifact.variant,
        model_id=model_id,
        champion_moved=move,
        reason=reason,
    )


def _current_champion(mlflow_client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def promotion_decision(
    recipe: Recipe,
    objective_value: float,
    accuracy: float | None,
    champion: Any | None,
    candidate_tags: dict[str, str],
) -> tuple[bool, str]:
    """Move champion when there is none, or when the candidate beats it within the accuracy budget
    and is not slower than it by more than the regression margin on any shared provider/batch."""
    if champion is None:
        return True, "no champion yet"
    regression = latency_regression(candidate_tags, champion, recipe.registry.regression_margin)
    if regression:
        return False, regression
    key = objective_key(recipe)
    if champion.tags.get("objective") != key or "objective_value" not in champion.tags:
        return False, f"champion v{champion.version} was not measured on {key}; promote it by hand"
    champion_value = float(champion.tags["objective_value"])
    champion_accuracy = champion.tags.get("parity.accuracy")
    budget = recipe.registry.champion_accuracy_budget
    if accuracy is not None and champion_accuracy is not None:
        drop = float(champion_accuracy) - accuracy
        if drop > budget:
            return (
                False,
                f"accuracy {accuracy:.4f} is {drop:.4f} below champion v{champion.version} (budget {budget})",
            )
    if objective_value >= champion_value:
        return (
            False,
            f"{key} {objective_value:.4g} does not beat champion v{champion.version}'s {champion_value:.4g}",
        )
    return (
        True,
        f"{key} {objective_value:.4g} beats champion v{champion.version}'s {champion_value:.4g}",
    )


def latency_regression(candidate_tags: dict[str, str], champion: Any, margin: float) -> str:
    """Why the candidate is a latency regression against the champion, or '' when it is not."""
    slower = []
    for key, value in sorted(candidate_tags.items()):
        if key.startswith("p50_ms.") and key in champion.tags:
            mine, theirs = float(value), float(champion.tags[key])
            if mine > theirs * (1 + margin):
                slower.append(f"{key} {mine:.4g} vs {theirs:.4g} (+{mine / theirs - 1:.0%})")
    if not slower:
        return ""
    return f"slower than champion v{champion.version} by more than {margin:.0%}: " + ", ".join(
        slower
    )


def code_commit() -> str:
    """The git commit of the working directory, or 'unknown' outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
