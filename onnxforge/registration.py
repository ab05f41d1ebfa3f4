"""The registry update: repair, create versions, re-check the evidence, move aliases last.

The caller runs all of this inside one critical section per registered model (a Prefect global
concurrency limit), so two runs never read the same champion and both move it. Every version is
created with `onnxforge.state = pending`; only after its promotion tags and description are written
do the aliases move, and only then is the state `done`. A run that dies in between leaves a pending
version, which the next run of the same model finds and finishes (it holds its aliases) or marks
`incomplete` (it does not).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from onnxforge.aliases import MoveNote, all_versions, current_version, move_alias
from onnxforge.edge import EDGE_ALIAS
from onnxforge.errors import RefusedError
from onnxforge.metrics import provider_short
from onnxforge.profiles import DEFAULT, RuntimeProfile, deployed_profile
from onnxforge.promotion import CHALLENGER
from onnxforge.recipe import BenchmarkSpec, Recipe, RegisterSpec
from onnxforge.records import AliasDecision, EdgeCandidate, Proposal, Registration, RunEvidence
from onnxforge.registry import version_tags
from onnxforge.tracking import RunContext, client

STATE = "onnxforge.state"
RECONFIRMED = "reconfirmed_by_run"  # the last run whose identical candidate re-confirmed it
PENDING, DONE, INCOMPLETE = "pending", "done", "incomplete"
# MLflow keeps a version description in a String(5000) column (model_versions.description);
# a longer run summary is cut there, with a note (summary.md in the run keeps all of it)
DESCRIPTION_LIMIT = 5000
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS


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


def repair_half_done(
    mlflow_client: Any, name: str, run_id: str, versions: list[Any] | None = None
) -> list[str]:
    """Finish or mark the pending versions that other, stopped runs left behind (`versions`: the
    model's versions when the caller already read them)."""
    notes = []
    versions = all_versions(mlflow_client, name) if versions is None else versions
    stopped = [
        v
        for v in versions
        if v.tags.get(STATE) == PENDING and v.tags.get("source_run_id") != run_id
    ]
    aliases = _held_aliases(mlflow_client, name) if stopped else {}
    for version in stopped:
        tags = version.tags
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
    recipe: Recipe, context: RunContext, evidence: RunEvidence, proposal: Proposal
) -> dict[str, dict[str, str]]:
    """variant -> the tags of its version, for every variant some alias decision is about."""
    decisions, floors, trained = proposal.decisions, proposal.floors, evidence.trained
    best = {
        f"best.{provider_short(d.provider)}": d.variant
        for d in decisions
        if d.variant and d.alias.startswith("champion-") and d.alias != EDGE_ALIAS
    }
    edge = {c.bundle.label: c for c in evidence.edge}
    tags_for: dict[str, dict[str, str]] = {}
    for variant in dict.fromkeys(d.variant for d in decisions if d.variant):
        chosen = {
            d.provider: d.profile
            for d in decisions
            if d.variant == variant and d.alias != EDGE_ALIAS
        }
        first = next(iter(chosen.values()), DEFAULT)
        bench = [  # this variant's rows under the profile each provider chose it with
            r
            for r in evidence.bench
            if r.variant != variant or r.profile == chosen.get(r.provider, first)
        ]
        tags = version_tags(
            recipe,
            context,
            evidence.artifact(variant),
            evidence.parity_of(variant, first),
            bench,
            trained.dataset_hash,
        )
        tags["provider"] = ",".join(chosen) or "CPUExecutionProvider"
        tags["floors"] = "; ".join(floors.get(variant, [])) or "passed"
        tags["checkpoint_sha256"] = trained.checkpoint_sha256
        tags |= profile_tags(recipe.benchmark, chosen) | proposal.deployment_tags
        if variant in edge:  # the bundle's files are in this run's artifacts, named by run id
            tags |= edge_tags(edge[variant]) | {"edge.run_id": context.run_id}
        tags_for[variant] = {**tags, **best}
    return tags_for


def profile_tags(spec: BenchmarkSpec, chosen: dict[str, str]) -> dict[str, str]:
    """`profile.<provider>`: the runtime profile (onnxforge.profiles.deployed_profile, JSON) a
    version was measured and chosen with on each provider: what a deployer rebuilds."""
    by_name = {profile.name: profile for profile in spec.profiles}
    tags = {}
    for provider, name in chosen.items():
        profile = by_name.get(name, RuntimeProfile(name=name))
        stored = deployed_profile(profile, provider, spec.intra_op_threads, spec.inter_op_threads)
        tags[f"profile.{provider_short(provider)}"] = json.dumps(stored, sort_keys=True)
    return tags


def edge_tags(candidate: EdgeCandidate) -> dict[str, str]:
    """`edge.*`: the version's edge bundle, every file by sha256 (the files are in the run's
    artifacts under edge/<variant>/), its parity and its single-thread figures."""
    bundle, row = candidate.bundle, candidate.row
    tags = {
        "edge.ort_sha256": bundle.ort_sha256,
        "edge.ort_size_bytes": str(bundle.ort_size_bytes),
        "edge.ops_config_sha256": bundle.ops_config_sha256,
        "edge.usability": bundle.usability,
        "edge.usability_sha256": bundle.usability_sha256,
        "edge.optimization_style": bundle.optimization_style,
        "edge.target_platform": bundle.target_platform,
        "edge.parity": "passed" if candidate.parity.passed else "failed",
    }
    if row is not None and row.status == "ok":
        tags["edge.p50_ms.1thread.bs1"] = f"{row.p50_ms:.4f}"
        tags["edge.peak_rss_increase_mb"] = f"{row.peak_rss_increase_mb:.1f}"
    return tags


def identical_versions(existing: list[Any], tags_for: dict[str, dict[str, str]]) -> dict[str, Any]:
    """variant -> a finished version of an earlier run with the same file (sha256) and no
    conflicting runtime profile: registering it again would make a twin, so the run re-confirms
    it. A profile the earlier version does not have yet (it was chosen for another alias) is no
    conflict: the re-confirmation adds it (deployment_tags_to_add)."""
    found = {}
    for variant, tags in tags_for.items():
        deployed = {k: v for k, v in tags.items() if k.startswith("profile.")}
        for version in sorted(existing, key=lambda v: int(v.version), reverse=True):
            theirs = version.tags
            same = theirs.get("sha256") == tags["sha256"] and theirs.get(STATE) == DONE
            if same and all(theirs.get(k, v) == v for k, v in deployed.items()):
                found[variant] = version
                break
    return found


def deployment_tags_to_add(theirs: dict[str, str], tags: dict[str, str]) -> dict[str, str]:
    """What a re-confirmed version lacks for the aliases this run may move to it: a profile it
    was not chosen with before, and the edge bundle (with the run that holds its files) if it
    has none. Nothing it has is overwritten: its own measurements stay its own."""
    added = {k: v for k, v in tags.items() if k.startswith("profile.") and k not in theirs}
    if "edge.ort_sha256" not in theirs:
        added |= {k: v for k, v in tags.items() if k.startswith("edge.")}
    return added


def register_versions(
    name: str,
    context: RunContext,
    model_ids: dict[str, str],
    tags_for: dict[str, dict[str, str]],
    existing: list[Any] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, str]:
    """One version per candidate variant (variant -> version), reusing this run's earlier ones.

    Created with the client's create_model_version, not mlflow.register_model: that one first
    tries create_registered_model (an error round trip on every version after the first) and
    re-reads the LoggedModel; here the model is created once and each version is one call.
    Each version starts with a short description, replaced by the run summary when it is final.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(context.tracking_uri)
    existing = all_versions(mlflow_client, name) if existing is None else existing
    mine = {
        v.tags.get("variant"): str(v.version)
        for v in existing
        if v.tags.get("source_run_id") == context.run_id
    }
    if not existing and tags_for:
        try:
            mlflow_client.create_registered_model(name)
        except MlflowException as error:  # another run created it a moment ago
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
    versions = {}
    twins = identical_versions(
        [v for v in existing if v.tags.get("source_run_id") != context.run_id], tags_for
    )
    for variant, tags in tags_for.items():
        if variant in mine:  # a retried task: the version exists, do not make a twin
            versions[variant] = mine[variant]
            log(f"{name} v{mine[variant]} ({variant}) exists from this run's earlier try")
            continue
        if variant in twins:  # the same file and profile: re-confirmed, not registered again
            version = str(twins[variant].version)
            versions[variant] = version
            added = deployment_tags_to_add(twins[variant].tags, tags)
            for key, value in {**added, RECONFIRMED: context.run_id}.items():
                mlflow_client.set_model_version_tag(name, version, key, value)
            note = f", added {', '.join(sorted(added))}" if added else ""
            log(f"{name} v{version} ({variant}) re-confirmed: the same sha256 and profile{note}")
            continue
        created = mlflow_client.create_model_version(
            name,
            source=f"models:/{model_ids[variant]}",
            run_id=context.run_id,
            tags={**tags, STATE: PENDING, "promotion": PENDING},
            description=pending_description(variant, context),
            model_id=model_ids[variant],
            await_creation_for=0,  # the SQL store creates versions READY; nothing to wait for
        )
        versions[variant] = str(created.version)
        # What mlflow.register_model writes too: the LoggedModel page links to its version.
        link = [{"name": name, "version": str(created.version)}]
        mlflow_client.set_logged_model_tags(
            model_ids[variant], {MODEL_VERSIONS_TAG: json.dumps(link)}
        )
        log(f"created {name} v{created.version} ({variant}, {len(tags) + 2} tags, pending)")
    return versions


def pending_description(variant: str, context: RunContext) -> str:
    """A version's description until its run's summary replaces it."""
    return (
        f"{variant} from MLflow run {context.run_id}: pending until the run moves its aliases "
        "(then this becomes the run's summary)"
    )


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
    registry: RegisterSpec, proposal: Proposal, versions: dict[str, str], model_ids: dict[str, str]
) -> Registration:
    """What was registered, and every alias decision with its version filled in."""
    name = registry.model_name
    floors = proposal.floors
    decisions = [
        d.model_copy(update={"version": versions.get(d.variant or "")}) for d in proposal.decisions
    ]
    if not registry.enabled:
        disabled = {"move": False, "reason": "register.enabled is false"}
        decisions = [d.model_copy(update=disabled) for d in decisions]
    champion = decisions[0]
    if champion.variant is None or not registry.enabled:
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
    context: RunContext,
    registration: Registration,
    description: str,
    by: str,
    log: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Tags and descriptions first, then the aliases (the very last write), then state done."""
    mlflow_client = client(context.tracking_uri)
    name = registration.model_name
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 40] + "\n\n(cut; summary.md has it all)"
    created = {}  # variant -> version this run created; the others are re-confirmed ones
    for variant, version in registration.versions.items():
        tags = mlflow_client.get_model_version(name, version).tags
        if tags.get("source_run_id") != context.run_id:  # keeps its own run's description
            mlflow_client.set_tag(context.run_id, f"reconfirmed.{variant}", f"v{version}")
            continue
        created[variant] = version
        with timed(log, f"{name} v{version}: promotion tag and description written"):
            mlflow_client.set_model_version_tag(
                name, version, "promotion", promotion_text(registration, variant)
            )
            mlflow_client.update_model_version(name, version, description=description)
    with timed(log, "aliases moved"):
        moved = _move_aliases(mlflow_client, registration, by, context.run_id)
    for version in created.values():
        mlflow_client.set_model_version_tag(name, version, STATE, DONE)
    log(f"{name} versions {', '.join(created.values()) or 'none new'}: state done")
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
                note = MoveNote(decision.reason, by, run_id)
                previous = move_alias(mlflow_client, name, decision.alias, decision.version, note)
                moved.append((decision.alias, previous))
    except Exception as error:
        undo = f"undo: moving the run's other aliases failed ({type(error).__name__})"
        for alias, previous in reversed(moved):
            if previous is None:
                mlflow_client.delete_registered_model_alias(name, alias)
            else:  # recorded, so the history (and rollback) stays true
                move_alias(mlflow_client, name, alias, previous, MoveNote(undo, by, run_id))
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


@contextmanager
def timed(log: Callable[[str], None], what: str) -> Iterator[None]:
    """Log `what` with the seconds it took, when it is done."""
    started = time.perf_counter()
    yield
    log(f"{what} ({time.perf_counter() - started:.2f} s)")


def register_candidates(
    recipe: Recipe,
    context: RunContext,
    evidence: RunEvidence,
    proposal: Proposal,
    model_ids: dict[str, str],
    log: Callable[[str], None] = lambda _: None,
) -> Registration:
    """Inside the registry lock: repair half-done versions, re-check the champion, create the
    versions (state pending), one log line per step. Aliases do not move here."""
    name = recipe.registry.model_name
    if not recipe.registry.enabled:
        return registration_record(recipe.registry, proposal, {}, model_ids)
    mlflow_client = client(context.tracking_uri)
    with timed(log, f"read the versions of {name}"):
        existing = all_versions(mlflow_client, name)
    with timed(log, "repaired versions that stopped runs left pending"):
        for note in repair_half_done(mlflow_client, name, context.run_id, existing):
            log(f"repaired {name} {note}")
    with timed(log, "re-checked who holds the champion aliases"):
        checked = recheck(mlflow_client, name, list(proposal.decisions))
    proposal = proposal.model_copy(update={"decisions": tuple(checked)})
    tags_for = candidate_tags(recipe, context, evidence, proposal)
    log(f"registering {name}: {', '.join(tags_for) or 'nothing'}")
    with timed(log, "created the versions"):
        versions = register_versions(name, context, model_ids, tags_for, existing, log)
    return registration_record(recipe.registry, proposal, versions, model_ids)


def record_best(tracking_uri: str, run_id: str, decisions: list[AliasDecision]) -> None:
    """Run tags `best.<provider>`: the variant each champion-<provider> decision is about."""
    mlflow_client = client(tracking_uri)
    for decision in decisions:
        if decision.alias.startswith("champion-") and decision.variant:
            provider = decision.alias.removeprefix("champion-")
            mlflow_client.set_tag(run_id, f"best.{provider}", decision.variant)
