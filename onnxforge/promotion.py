"""The promotion policy: which alias moves to this run's candidate, on this run's evidence only.

The champion was fetched (sha256 checked), scored on this run's test split and timed in the same
interleaved rounds as this run's variants; nothing measured in another run decides anything.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from onnxforge.metrics import objective_key, provider_short
from onnxforge.recipe import Objective, Recipe, RegisterSpec
from onnxforge.records import (
    AliasDecision,
    BenchResult,
    ChampionRecord,
    ModelArtifact,
    ParityResult,
    RunEvidence,
)
from onnxforge.rounds import compare, describe

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Candidate:
    """A variant proposed for an alias: its file, its parity, and the floors it is below."""

    artifact: ModelArtifact
    parity: ParityResult
    floors: tuple[str, ...] = ()


def provider_alias(provider: str) -> str:
    """`champion-cpu` for CPUExecutionProvider."""
    return f"{CHAMPION}-{provider_short(provider)}"


def alias_targets(recipe: Recipe) -> list[tuple[str, str]]:
    """(alias, provider): champion for the objective's provider, champion-<p> for each provider."""
    targets = [(CHAMPION, recipe.registry.objective.provider)]
    targets += [(provider_alias(p), p) for p in recipe.benchmark.providers]
    return targets


def best_per_provider(
    objective: Objective,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
) -> dict[str, tuple[str, float]]:
    """For each benchmarked provider: the passing variant with the lowest objective value."""
    passed = {p.variant for p in parity if p.passed}
    sizes = {a.variant: float(a.size_bytes) for a in artifacts}
    ranked: dict[str, list[tuple[bool, float, str]]] = defaultdict(list)
    for row in bench:
        if row.source != "run" or row.status != "ok" or row.variant not in passed:
            continue
        if objective.metric == "size_bytes":
            value = sizes[row.variant]
        elif row.batch_size == objective.batch_size:
            value = float(getattr(row, objective.metric))
        else:
            continue
        ranked[row.provider].append((row.noisy, value, row.variant))
    # a noisy row is chosen only when every row on that provider is noisy
    return {provider: (min(rows)[2], min(rows)[1]) for provider, rows in ranked.items()}


def _rows(
    bench: list[BenchResult], variant: str, source: str
) -> dict[tuple[str, int], BenchResult]:
    return {
        (r.provider, r.batch_size): r for r in bench if r.variant == variant and r.source == source
    }


def _quality_reason(
    registry: RegisterSpec, candidate: ParityResult, holder: ChampionRecord
) -> str | None:
    """Why the candidate is worse than the champion on this run's test split, if it is."""
    theirs = holder.evaluation
    budget = registry.champion_accuracy_budget
    if theirs is None:
        return None
    if candidate.accuracy is not None and theirs.accuracy is not None:
        drop = theirs.accuracy - candidate.accuracy
        if drop > budget:
            return (
                f"accuracy {candidate.accuracy:.4f} is {drop:.4f} below champion "
                f"v{holder.version}'s {theirs.accuracy:.4f} on this run's test split (budget {budget})"
            )
    mine, their_rmse = getattr(candidate, "rmse", None), getattr(theirs, "rmse", None)
    if mine is not None and their_rmse is not None and mine > their_rmse * (1 + budget):
        return f"RMSE {mine:.4g} is above champion v{holder.version}'s {their_rmse:.4g}"
    return None


def _regression_reason(
    registry: RegisterSpec, mine: dict, theirs: dict, holder: ChampionRecord
) -> str | None:
    """The candidate is slower than the champion by more than the margin, with confidence."""
    margin = registry.regression_margin
    slower = []
    for key in sorted(set(mine) & set(theirs)):
        comparison = compare(mine[key], theirs[key])
        if comparison is None or comparison.noisy:
            continue
        if comparison.high < 1.0 / (1.0 + margin):
            slower.append(describe(comparison))
    if not slower:
        return None
    return (
        f"slower than champion v{holder.version} by more than {margin:.0%} "
        f"(champion p50 / candidate p50): " + "; ".join(slower)
    )


def _speed_decision(
    registry: RegisterSpec, provider: str, mine: dict, theirs: dict, holder: ChampionRecord
) -> tuple[bool, str]:
    objective = registry.objective
    key = (provider, objective.batch_size)
    if key not in mine or key not in theirs:
        return False, f"champion v{holder.version} was not measured on {provider} bs{key[1]}"
    comparison = compare(mine[key], theirs[key])
    if comparison is None:
        reason = theirs[key].reason or mine[key].reason
        return False, f"no same-run comparison with champion v{holder.version}: {reason}"
    if comparison.noisy:
        return (
            False,
            f"too noisy to decide against champion v{holder.version}: {describe(comparison)}",
        )
    needed = 1.0 + registry.speed_margin
    if comparison.low > needed:
        return True, f"faster than champion v{holder.version}: {describe(comparison)}"
    return (
        False,
        f"within noise of champion v{holder.version}: {describe(comparison)}; "
        f"moving needs the whole interval above {needed:.3g}x",
    )


def decide(
    registry: RegisterSpec,
    provider: str,
    proposed: Candidate,
    holder: ChampionRecord | None,
    bench: list[BenchResult],
) -> tuple[bool, str]:
    """Whether the alias held by `holder` (None: nobody) moves to `proposed`, and why."""
    candidate, candidate_parity = proposed.artifact, proposed.parity
    if proposed.floors:
        return False, "below a quality floor: " + "; ".join(proposed.floors)
    if holder is None:
        return True, "no champion yet"
    if holder.tampered:  # a changed file must not stay champion
        return True, f"champion v{holder.version} failed verification ({holder.reason})"
    if not holder.verified:
        return (
            False,
            f"champion v{holder.version} cannot be verified ({holder.reason}); promote by hand",
        )
    if holder.sha256 == candidate.sha256:
        return False, f"identical to champion v{holder.version} (same sha256)"
    if holder.evaluation is None:
        return (
            False,
            f"champion v{holder.version} could not be evaluated on this run's test split "
            f"({holder.reason}); promote by hand",
        )
    quality = _quality_reason(registry, candidate_parity, holder)
    if quality:
        return False, quality
    mine, theirs = _rows(bench, candidate.variant, "run"), _rows(bench, holder.label, "champion")
    regression = _regression_reason(registry, mine, theirs, holder)
    if regression:
        return False, regression
    if registry.objective.metric == "size_bytes":
        champion_size = holder.size_bytes
        if champion_size is not None and candidate.size_bytes < champion_size:
            return True, f"smaller than champion v{holder.version}: {candidate.size_bytes} bytes"
        return False, f"not smaller than champion v{holder.version} ({champion_size} bytes)"
    return _speed_decision(registry, provider, mine, theirs, holder)


def propose(
    recipe: Recipe, evidence: RunEvidence, floors: dict[str, tuple[str, ...]]
) -> list[AliasDecision]:
    """One decision per alias (champion, champion-<provider>, challenger); nothing is written."""
    bench = list(evidence.bench)
    artifacts, parity = list(evidence.artifacts), list(evidence.parity)
    best = best_per_provider(recipe.registry.objective, artifacts, parity, bench)
    decisions = []
    for alias, provider in alias_targets(recipe):
        holder = next((c for c in evidence.champions if alias in c.aliases), None)
        against = holder.version if holder else None
        variant = best[provider][0] if provider in best else None
        if variant is None:
            move, reason = False, f"no variant passed parity and was measured on {provider}"
        else:
            proposed = Candidate(
                evidence.artifact(variant), evidence.parity_of(variant), floors.get(variant, ())
            )
            move, reason = decide(recipe.registry, provider, proposed, holder, bench)
        decisions.append(
            AliasDecision(
                alias=alias,
                provider=provider,
                variant=variant,
                against=against,
                move=move,
                reason=reason,
            )
        )
    objective = decisions[0]
    decisions.append(
        AliasDecision(
            alias=CHALLENGER,
            provider=objective.provider,
            variant=objective.variant,
            move=objective.variant is not None,
            reason=f"best passing variant by {objective_key(recipe.registry.objective)} on this run",
        )
    )
    return decisions
