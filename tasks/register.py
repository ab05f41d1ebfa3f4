"""Register tasks: log every variant, propose alias moves, then the locked registry update."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.data_record import DataRecord, read_splits
from onnxforge.deploy_info import deployment_tags
from onnxforge.floors import floor_failures
from onnxforge.inputs import take
from onnxforge.machine_lock import lock_path as machine_lock_path
from onnxforge.machine_lock import machine_lock
from onnxforge.procs import EMBEDDED_SERVER_ENV
from onnxforge.promotion import propose
from onnxforge.recipe import Recipe
from onnxforge.records import Proposal, Registration, RunEvidence
from onnxforge.registration import finalize, record_best, register_candidates
from onnxforge.registry import log_variant_models
from onnxforge.tracking import RunContext
from tasks.cache import MLFLOW_IO_RETRIES
from tasks.locks import ensure_limit


def lock_name(model_name: str) -> str:
    """The Prefect global concurrency limit that guards one registered model."""
    return f"onnxforge-registry-{model_name}"


@contextmanager
def registry_lock(model_name: str, timeout_s: float = 900) -> Iterator[None]:
    """Hold the model's registry limit (created with one slot on first use) for the block."""
    from prefect.concurrency.sync import concurrency

    name = lock_name(model_name)
    if os.environ.get(EMBEDDED_SERVER_ENV):
        # The CLI's own server keeps leases in memory: a slot held by a SIGKILLed run would
        # stay taken in its database for good. A file lock dies with its process.
        with machine_lock(machine_lock_path(f"registry-{model_name}"), timeout_s):
            yield
        return
    ensure_limit(name)
    # strict: a limit that vanished must not turn the critical section into no lock at all
    with concurrency(name, occupy=1, strict=True, timeout_seconds=timeout_s):
        yield


@task(name="log-models", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def log_models(evidence: RunEvidence, data: DataRecord, context: RunContext) -> dict[str, str]:
    """Every variant as an MLflow LoggedModel with its own metrics; variant -> model id."""
    example = take(read_splits(data).x_test, slice(0, 2))
    artifacts, parity, bench = list(evidence.artifacts), list(evidence.parity), list(evidence.bench)
    return log_variant_models(context, artifacts, parity, bench, example)


@task(name="propose-promotion", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def propose_promotion(
    recipe: Recipe, evidence: RunEvidence, data: DataRecord, context: RunContext
) -> Proposal:
    """Floors for every passing variant, then one decision per alias, from this run's numbers."""
    splits = read_splits(data)
    floors = {
        p.variant: tuple(floor_failures(recipe.registry, p, splits.y_train, splits.y_test))
        for p in evidence.parity
        if p.passed
    }
    decisions = propose(recipe, evidence, floors)
    record_best(context.tracking_uri, context.run_id, decisions)
    for d in decisions:
        verdict = "would move" if d.move else "stays"
        get_run_logger().info("%s -> %s: %s (%s)", d.alias, d.variant, verdict, d.reason)
    deployment = deployment_tags(recipe.dataset, data.num_classes)
    return Proposal(decisions=tuple(decisions), floors=floors, deployment_tags=deployment)


@task(name="register", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def register(
    recipe: Recipe,
    evidence: RunEvidence,
    proposal: Proposal,
    model_ids: dict[str, str],
    context: RunContext,
) -> Registration:
    """Inside the registry lock: repair half-done versions, re-check the champion, create versions
    (state pending). Aliases do not move here."""
    log = get_run_logger().info
    return register_candidates(recipe, context, evidence, proposal, model_ids, log=log)


@task(name="promote", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def promote(registration: Registration, summary: str, context: RunContext) -> list[str]:
    """The last write of the run: promotion tags and descriptions, then the aliases."""
    if not registration.versions:
        return []
    logger = get_run_logger()
    by = f"onnxforge run {context.run_id}"
    moved = finalize(context, registration, summary, by, log=logger.info)
    logger.info("aliases moved on %s: %s", registration.model_name, moved or "none")
    return moved
