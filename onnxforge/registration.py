"""The registry update: repair, create versions, re-check the evidence, move aliases last.

The caller runs all of this inside one critical section per registered model (a Prefect global
concurrency limit), so two runs never read the same champion and both move it. Every version is
created with `onnxforge.state = pending`; only after its promotion tags and description are written
do the aliases move, and only then is the state `done`. A run that dies in between leaves a pending
version, which the next run of the same model finds and finishes (it holds its aliases) or marks
`incomplete` (it does not).
"""

from __future__ import annotations

from typing import Any

from onnxforge.aliases import all_versions, current_version, move_alias
from onnxforge.errors import RefusedError
from onnxforge.metrics import provider_short
from onnxforge.promotion import CHALLENGER
from onnxforge.recipe import Recipe
from onnxforge.records import (
    AliasDecision,
    BenchResult,
    ModelArtifact,
    ParityResult,
    Registration,
    TrainResult,
)
from onnxforge.registry import version_tags
from onnxforge.tracking import RunContext, client

STATE = "onnxforge.state"
PENDING, DONE, INCOMPLETE = "pending", "done", "incomplete"
# MLflow keeps a version description in a String(5000) column (model_versions.description);
# a longer run summary is cut there, with a note (summary.md in the run keeps all of it)
DESCRIPTION_LIMIT = 5000


def _held_aliases(mlflow_client: Any, name: str) -> dict[str, list[str]]:
    """version -> the aliases pointing at it (search results carry no aliases: MLflow's SQL
    store fills them in only on the registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = mlflow_client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    held: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        held.setdefault(str(version), []).append(alias)
    return held


def repair_half_done(mlflow_client: Any, name: str, run_id: str) -> list[str]:
    """Finish or mark the pending versions that other, stopped runs left behind."""
    notes = []
    versions = all_versions(mlflow_client, name)
    aliases = _held_aliases(mlflow_client, name) if versions else {}
    for version in versions:
        tags = version.tags
        if tags.get(STATE) != PENDING or tags.get("source_run_id") == run_id:
            continue
        held = aliases.get(str(version.version), [])
        if held:
            state = DONE
            note = f"finished by run {run_id}: run {tags.get('source_run_id')} moved {', '.join(held)} and stopped"
        else:
            state = INCOMPLETE
            note = (
                f"incomplete: run {tags.get('source_run_id')} stopped before its aliases moved; "
                f"never promoted (found by run {run_id})"
            )
        mlflow_client.set_model_version_tag(name, version.version, "promotion", note)
        mlflow_client.set_model_version_tag(name, version.version, STATE, state)
        notes.append(f"v{version.version}: {note}")
    return notes


def candidate_tags(
    recipe: Recipe,
    context: RunContext,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    decisions: list[AliasDecision],
    floors: dict[str, list[str]],
) -> dict[str, dict[str, str]]:
    """variant -> the tags of its version, for every variant some alias decision is about."""
    by_variant = {a.variant: a for a in artifacts}
    parity_by_variant = {p.variant: p for p in parity}
    best = {
        f"best.{provider_short(d.provider)}": d.variant
        for d in decisions
        if d.variant and d.alias.startswith("champion-")
    }
    tags_for: dict[str, dict[str, str]] = {}
    for variant in dict.fromkeys(d.variant for d in decisions if d.variant):
        tags = version_tags(
            recipe,
            context,
            by_variant[variant],
            parity_by_variant[variant],
            bench,
            trained.dataset_hash,
        )
        chosen_for = [d.provider for d in decisions if d.variant == variant]
        tags["provider"] = ",".join(dict.fromkeys(chosen_for))
        tags["floors"] = "; ".join(floors.get(variant, [])) or "passed"
        tags["checkpoint_sha256"] = trained.checkpoint_sha256
        tags_for[variant] = {**tags, **best}
    return tags_for


def register_versions(
    name: str, context: RunContext, model_ids: dict[str, str], tags_for: dict[str, dict[str, str]]
) -> dict[str, str]:
    """One version per candidate variant (variant -> version), reusing this run's earlier ones."""
    import mlflow

    mlflow_client = client(context.tracking_uri)
    mine = {
        v.tags.get("variant"): str(v.version)
        for v in all_versions(mlflow_client, name)
        if v.tags.get("source_run_id") == context.run_id
    }
    versions = {}
    for variant, tags in tags_for.items():
        if variant in mine:  # a retried task: the version exists, do not make a twin
            versions[variant] = mine[variant]
            continue
        pending = {**tags, STATE: PENDING, "promotion": PENDING}
        created = mlflow.register_model(f"models:/{model_ids[variant]}", name, tags=pending)
        versions[variant] = str(created.version)
    return versions


def recheck(mlflow_client: Any, name: str, decisions: list[AliasDecision]) -> list[AliasDecision]:
    """A move whose champion changed since the evidence was taken (another run) does not happen."""
    checked = []
    for decision in decisions:
        if not decision.move or decision.alias == CHALLENGER:
            checked.append(decision)
            continue
        holder = current_version(mlflow_client, name, decision.alias)
        now = str(holder.version) if holder is not None else None
        if now != decision.against:
            was = f"v{decision.against}" if decision.against else "no champion"
            reason = (
                f"{decision.alias} moved to v{now} while this run measured against {was}; "
                f"this run's evidence is stale, so it stays challenger (was: {decision.reason})"
            )
            decision = decision.model_copy(update={"move": False, "reason": reason})
        checked.append(decision)
    return checked


def registration_record(
    recipe: Recipe,
    decisions: list[AliasDecision],
    versions: dict[str, str],
    model_ids: dict[str, str],
    floors: dict[str, list[str]],
) -> Registration:
    """What was registered, and every alias decision with its version filled in."""
    name = recipe.registry.model_name
    decisions = [d.model_copy(update={"version": versions.get(d.variant or "")}) for d in decisions]
    if not recipe.registry.enabled:
        disabled = {"move": False, "reason": "register.enabled is false"}
        decisions = [d.model_copy(update=disabled) for d in decisions]
    champion = decisions[0]
    if champion.variant is None or not recipe.registry.enabled:
        # other providers' candidates may still be registered (champion-<provider>)
        return Registration(
            model_name=name,
            version=None,
            variant=None,
            model_id=None,
            champion_moved=False,
            reason=champion.reason,
            decisions=tuple(decisions),
            versions=versions,
        )
    return Registration(
        model_name=name,
        version=versions[champion.variant],
        variant=champion.variant,
        model_id=model_ids[champion.variant],
        champion_moved=champion.move,
        reason=champion.reason,
        decisions=tuple(decisions),
        versions=versions,
        floors=tuple(floors.get(champion.variant, [])),
    )


def promotion_text(registration: Registration, variant: str) -> str:
    """The `promotion` tag of one version: every alias decision about it."""
    parts = [
        f"{d.alias} {'moved' if d.move else 'kept'}: {d.reason}"
        for d in registration.decisions
        if d.variant == variant and d.alias != CHALLENGER
    ]
    return " | ".join(parts)


def finalize(
    context: RunContext, registration: Registration, description: str, by: str
) -> list[str]:
    """Tags and descriptions first, then the aliases (the very last write), then state done."""
    mlflow_client = client(context.tracking_uri)
    name = registration.model_name
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 40] + "\n\n(cut; summary.md has it all)"
    for variant, version in registration.versions.items():
        mlflow_client.set_model_version_tag(
            name, version, "promotion", promotion_text(registration, variant)
        )
        mlflow_client.update_model_version(name, version, description=description)
    moved = _move_aliases(mlflow_client, registration, by, context.run_id)
    for version in registration.versions.values():
        mlflow_client.set_model_version_tag(name, version, STATE, DONE)
    return moved


def _move_aliases(
    mlflow_client: Any, registration: Registration, by: str, run_id: str
) -> list[str]:
    """Move every decided alias; if one move fails, put back the ones already moved."""
    name = registration.model_name
    moved: list[tuple[str, str | None]] = []
    try:
        for decision in registration.decisions:
            if decision.move and decision.version is not None:
                _still_held_by(mlflow_client, name, decision)
                previous = move_alias(
                    mlflow_client,
                    name,
                    decision.alias,
                    decision.version,
                    decision.reason,
                    by,
                    run_id,
                )
                moved.append((decision.alias, previous))
    except Exception as error:
        undo = f"undo: moving the run's other aliases failed ({type(error).__name__})"
        for alias, previous in reversed(moved):
            if previous is None:
                mlflow_client.delete_registered_model_alias(name, alias)
            else:  # recorded, so the history (and rollback) stays true
                move_alias(mlflow_client, name, alias, previous, undo, by, run_id)
        raise
    return [alias for alias, _ in moved]


def _still_held_by(mlflow_client: Any, name: str, decision: AliasDecision) -> None:
    """Refuse to overwrite an alias that someone moved by hand after the locked re-check."""
    if decision.alias == CHALLENGER:
        return
    holder = current_version(mlflow_client, name, decision.alias)
    now = str(holder.version) if holder is not None else None
    if now not in (decision.against, decision.version):
        raise RefusedError(
            f"{name}@{decision.alias} moved to v{now} during this run's registration "
            f"(this run decided against v{decision.against}); not overwriting it"
        )
