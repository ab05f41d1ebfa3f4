"""Register tasks: log every variant, propose alias moves, then the locked registry update."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.datasets import load_splits
from onnxforge.floors import floor_failures
from onnxforge.inputs import take
from onnxforge.promotion import propose
from onnxforge.recipe import Recipe
from onnxforge.records import (
    AliasDecision,
    BenchResult,
    ChampionRecord,
    ModelArtifact,
    ParityResult,
    Registration,
    TrainResult,
)
from onnxforge.registration import (
    candidate_tags,
    finalize,
    recheck,
    register_versions,
    registration_record,
    repair_half_done,
)
from onnxforge.registry import log_variant_models
from onnxforge.tracking import RunContext, client

MLFLOW_RETRIES = {"retries": 2, "retry_delay_seconds": [5, 15]}


def lock_name(model_name: str) -> str:
    """The Prefect global concurrency limit that guards one registered model."""
    return f"onnxforge-registry-{model_name}"


@contextmanager
def registry_lock(model_name: str, timeout_s: float = 900) -> Iterator[None]:
    """Hold the model's registry limit (created with one slot on first use) for the block."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = lock_name(model_name)
    with get_client(sync_client=True) as prefect_client:
        try:
            prefect_client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                prefect_client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            except ObjectAlreadyExists:  # another run created it a moment ago
                pass
    # strict: a limit that vanished must not turn the critical section into no lock at all
    with concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s):
        yield


@task(name="log-models", cache_policy=NO_CACHE)
def log_models(
    recipe: Recipe,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    context: RunContext,
) -> dict[str, str]:
    """Every variant as an MLflow LoggedModel with its own metrics; variant -> model id."""
    example = take(load_splits(recipe.dataset).x_test, slice(0, 2))
    return log_variant_models(context, artifacts, parity, bench, example)


@task(name="propose-promotion", cache_policy=NO_CACHE)
def propose_promotion(
    recipe: Recipe,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    champions: list[ChampionRecord],
    context: RunContext,
) -> tuple[list[AliasDecision], dict[str, list[str]]]:
    """Floors for every passing variant, then one decision per alias, from this run's numbers."""
    splits = load_splits(recipe.dataset)
    floors = {
        p.variant: floor_failures(recipe.registry, p, splits.y_train, splits.y_test)
        for p in parity
        if p.passed
    }
    decisions = propose(recipe, artifacts, parity, bench, champions, floors)
    mlflow_client = client(context.tracking_uri)
    logger = get_run_logger()
    for decision in decisions:
        if decision.alias.startswith("champion-") and decision.variant:
            mlflow_client.set_tag(
                context.run_id, f"best.{decision.alias.removeprefix('champion-')}", decision.variant
            )
        logger.info(
            "%s -> %s: %s (%s)",
            decision.alias,
            decision.variant,
            "would move" if decision.move else "stays",
            decision.reason,
        )
    return decisions, floors


@task(name="register", cache_policy=NO_CACHE, **MLFLOW_RETRIES)
def register(
    recipe: Recipe,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    proposal: tuple[list[AliasDecision], dict[str, list[str]]],
    model_ids: dict[str, str],
    context: RunContext,
) -> Registration:
    """Inside the registry lock: repair half-done versions, re-check the champion, create versions
    (state pending). Aliases do not move here."""
    decisions, floors = proposal
    name = recipe.registry.model_name
    if not recipe.registry.enabled:
        return registration_record(recipe, decisions, {}, model_ids, floors)
    logger = get_run_logger()
    mlflow_client = client(context.tracking_uri)
    for note in repair_half_done(mlflow_client, name, context.run_id):
        logger.warning("repaired %s %s", name, note)
    decisions = recheck(mlflow_client, name, decisions)
    tags_for = candidate_tags(recipe, context, trained, artifacts, parity, bench, decisions, floors)
    logger.info("registering %s: %s", name, ", ".join(tags_for) or "nothing")
    versions = register_versions(name, context, model_ids, tags_for)
    logger.info("registered %s versions %s (pending until the aliases move)", name, versions)
    return registration_record(recipe, decisions, versions, model_ids, floors)


@task(name="promote", cache_policy=NO_CACHE, **MLFLOW_RETRIES)
def promote(registration: Registration, summary: str, context: RunContext) -> list[str]:
    """The last write of the run: promotion tags and descriptions, then the aliases."""
    if not registration.versions:
        return []
    moved = finalize(context, registration, summary, by=f"onnxforge run {context.run_id}")
    get_run_logger().info("aliases moved on %s: %s", registration.model_name, moved or "none")
    return moved
