"""The register task: log every variant, register the best passing one, move aliases."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.datasets import load_splits
from onnxforge.inputs import take
from onnxforge.metrics import provider_short
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ModelArtifact, ParityResult, Registration, TrainResult
from onnxforge.registry import (
    best_per_provider,
    choose_best,
    log_variant_models,
    register_best,
    version_tags,
)
from onnxforge.tracking import RunContext, client


@task(name="register", cache_policy=NO_CACHE)
def register(
    recipe: Recipe,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    context: RunContext,
) -> Registration:
    """LoggedModel per variant; a registry version only for a variant that passed parity."""
    logger = get_run_logger()
    example = take(load_splits(recipe.dataset).x_test, slice(0, 2))
    model_ids = log_variant_models(context, artifacts, parity, bench, example)
    per_provider = best_per_provider(recipe, artifacts, parity, bench)
    mlflow_client = client(context.tracking_uri)
    for provider, (variant, _) in per_provider.items():
        mlflow_client.set_tag(context.run_id, f"best.{provider_short(provider)}", variant)
        logger.info("best passing variant on %s: %s", provider, variant)
    best, value, why = choose_best(recipe, artifacts, parity, bench)
    name = recipe.registry.model_name
    if best is None or not recipe.registry.enabled:
        reason = why if best is None else "register.enabled is false"
        logger.warning("nothing registered for %s: %s", name, reason)
        return Registration(
            model_name=name,
            version=None,
            variant=None,
            model_id=None,
            champion_moved=False,
            reason=reason,
        )
    best_parity = next(p for p in parity if p.variant == best.variant)
    tags = version_tags(recipe, context, best, value, best_parity, bench, trained.dataset_hash)
    tags.update({f"best.{provider_short(p)}": v for p, (v, _) in per_provider.items()})
    tags["checkpoint_sha256"] = trained.checkpoint_sha256
    registration = register_best(
        recipe, context, best, model_ids[best.variant], value, best_parity.accuracy, tags
    )
    logger.info(
        "registered %s v%s (%s, %s); champion %s: %s",
        name,
        registration.version,
        best.variant,
        why,
        "moved" if registration.champion_moved else "kept",
        registration.reason,
    )
    return registration
