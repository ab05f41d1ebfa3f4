"""The promotion policy: which alias moves to this run's candidate, on this run's evidence only.

The champion was fetched (sha256 checked), scored on this run's test split and timed in the same
interleaved rounds as this run's variants; nothing measured in another run decides anything.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from onnxforge.edge import EDGE_ALIAS, choose_edge
from onnxforge.metrics import objective_key, provider_short
from onnxforge.profiles import DEFAULT, labelled
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
    """A variant proposed for an alias: its file, its parity (under the runtime profile it was
    measured with), and the floors it is below."""

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


class Pick(NamedTuple):
    """The (variant, runtime profile) pair proposed on one provider, its objective value, and
    how noise entered the choice ("" when it did not)."""

    variant: str
    profile: str
    value: float
    note: str = ""


def fetched_aliases(recipe: Recipe) -> list[tuple[str, str]]:
    """The aliases whose holders a run fetches, verifies and times: alias_targets, and
    champion-edge for a recipe with an edge target (its file is bundled and timed too)."""
    edge = [(EDGE_ALIAS, "CPUExecutionProvider")] if recipe.edge is not None else []
    return alias_targets(recipe) + edge


def best_per_provider(
    objective: Objective,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
) -> dict[str, Pick]:
    """For each benchmarked provider: the passing (variant, profile) pair with the lowest
    objective value. A time is decided by intervals (`_by_intervals`); a file size is exact,
    so a noisy timing row must not keep the smallest file from winning."""
    passed = {(p.variant, p.profile) for p in parity if p.passed}
    sizes = {a.variant: float(a.size_bytes) for a in artifacts}
    ranked: dict[str, list[tuple[float, BenchResult]]] = defaultdict(list)
    for row in bench:
        if row.source != "run" or row.status != "ok" or (row.variant, row.profile) not in passed:
            continue
        if objective.metric == "size_bytes":
            ranked[row.provider].append((sizes[row.variant], row))
        elif row.batch_size == objective.batch_size:
            ranked[row.provider].append((float(getattr(row, objective.metric)), row))
    if objective.metric == "size_bytes":
        return {provider: _smallest(rows) for provider, rows in ranked.items()}
    return {provider: _by_intervals(rows) for provider, rows in ranked.items()}


def _smallest(rows: list[tuple[float, BenchResult]]) -> Pick:
    """The smallest file; between equal sizes, the calm row first (then the stable order)."""
    value, row = min(rows, key=lambda pair: (pair[0], pair[1].noisy))
    return Pick(row.variant, row.profile, value)


def _by_intervals(rows: list[tuple[float, BenchResult]]) -> Pick:
    """The lowest value wins when it is calm. A noisy row with a lower value wins too when its
    whole interval against the best calm row (same rounds, per-round ratios, bootstrap) is
    faster: its noise cannot explain the gap. Only when the intervals overlap is it too noisy
    to decide, and then the calm row is kept. A noisy row's per-round spread is already in its
    interval, so discarding it outright would let noise pick the slower variant."""
    value, best = min(rows, key=lambda pair: pair[0])
    calm = [pair for pair in rows if not pair[1].noisy]
    if not best.noisy or not calm:
        return Pick(best.variant, best.profile, value)
    calm_value, steady = min(calm, key=lambda pair: pair[0])
    comparison = compare(best, steady)
    name = labelled(best.variant, best.profile)
    if comparison is not None and comparison.low > 1.0:
        note = f"{name} is noisy, yet faster than {labelled(steady.variant, steady.profile)} "
        return Pick(
            best.variant,
            best.profile,
            value,
            note + f"over its whole interval: {describe(comparison)}",
        )
    shown = describe(comparison) if comparison else "not in the same rounds"
    note = f"too noisy to decide whether {name} is faster ({shown}); kept the calm row"
    return Pick(steady.variant, steady.profile, calm_value, note)


def _rows(
    bench: list[BenchResult], variant: str, source: str, profile: str | None = None
) -> dict[tuple[str, int], BenchResult]:
    return {
        (r.provider, r.batch_size): r
        for r in bench
        if r.variant == variant and r.source == source and profile in (None, r.profile)
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
        if comparison is None:
            continue
        if comparison.high < 1.0 / (1.0 + margin):  # the whole interval slower, noisy or not
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
    needed = 1.0 + registry.speed_margin
    if comparison.low > needed:  # the whole interval faster: noise cannot explain it
        return True, f"faster than champion v{holder.version}: {describe(comparison)}"
    if comparison.noisy and comparison.high > needed:
        return (
            False,
            f"too noisy to decide against champion v{holder.version}: {describe(comparison)}",
        )
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
    mine = _rows(bench, candidate.variant, "run", candidate_parity.profile)
    theirs = _rows(bench, holder.label, "champion")
    regression = _regression_reason(registry, mine, theirs, holder)
    if regression:
        return False, regression
    if registry.objective.metric == "size_bytes":
        champion_size = holder.size_bytes
        if champion_size is not None and candidate.size_bytes < champion_size:
            return True, f"smaller than champion v{holder.version}: {candidate.size_bytes} bytes"
        return False, f"not smaller than champion v{holder.version} ({champion_size} bytes)"
    return _speed_decision(registry, provider, mine, theirs, holder)


def edge_decision(
    recipe: Recipe, evidence: RunEvidence, floors: dict[str, tuple[str, ...]]
) -> AliasDecision:
    """champion-edge: the fastest single-thread .ort within the memory budget (onnxforge.edge);
    it replaces the holder only when the holder's own .ort, timed in the same rounds, is slower
    by the speed margin with the whole interval, or no longer fits the budget."""
    holder = next((c for c in evidence.champions if EDGE_ALIAS in c.aliases), None)
    budget = recipe.edge.memory_budget_mb  # type: ignore[union-attr]
    variant, reason = choose_edge(list(evidence.edge), budget)
    base = {"alias": EDGE_ALIAS, "provider": "CPUExecutionProvider", "profile": "edge"}
    base |= {"variant": variant, "against": holder.version if holder else None}
    if variant is None:
        return AliasDecision(**base, move=False, reason=reason)
    floor = floors.get(variant, ())
    move, why = _edge_move(recipe.registry, evidence, variant, holder, floor, budget)
    return AliasDecision(**base, move=move, reason=f"{why}; {reason}")


def _edge_move(
    registry: RegisterSpec,
    evidence: RunEvidence,
    variant: str,
    holder: ChampionRecord | None,
    floors: tuple[str, ...],
    budget: float,
) -> tuple[bool, str]:
    if floors:
        return False, "below a quality floor: " + "; ".join(floors)
    if holder is None:
        return True, "no edge champion yet"
    if holder.tampered:
        return True, f"edge champion v{holder.version} failed verification ({holder.reason})"
    if holder.sha256 == evidence.artifact(variant).sha256:
        return False, f"identical to edge champion v{holder.version} (same sha256)"
    rows = {c.bundle.label: c for c in evidence.edge}
    theirs = rows.get(holder.label)
    mine = rows[variant].row
    if theirs is None or theirs.row is None or mine is None:
        return False, f"edge champion v{holder.version}'s .ort was not timed in this run"
    peak = theirs.row.peak_rss_increase_mb or 0.0
    if peak > budget:
        return True, f"edge champion v{holder.version}'s .ort needs {peak:.1f} MB, over {budget:g}"
    comparison = compare(mine, theirs.row)
    if comparison is None:
        return False, f"no same-run comparison with edge champion v{holder.version}"
    if comparison.low > 1.0 + registry.speed_margin:
        return (
            True,
            f"faster with one thread than edge champion v{holder.version}: {describe(comparison)}",
        )
    return False, f"not faster than edge champion v{holder.version}: {describe(comparison)}"


def _profile_note(pick: Pick) -> str:
    """What a decision's reason adds about the runtime profile and noise (nothing by default)."""
    notes = [f"profile {pick.profile}"] if pick.profile != DEFAULT else []
    notes += [pick.note] if pick.note else []
    return f" ({'; '.join(notes)})" if notes else ""


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
        pick = best.get(provider)
        if pick is None:
            move, reason = False, f"no variant passed parity and was measured on {provider}"
        else:
            proposed = Candidate(
                evidence.artifact(pick.variant),
                evidence.parity_of(pick.variant, pick.profile),
                floors.get(pick.variant, ()),
            )
            move, reason = decide(recipe.registry, provider, proposed, holder, bench)
            reason += _profile_note(pick)
        decisions.append(
            AliasDecision(
                alias=alias,
                provider=provider,
                variant=pick.variant if pick else None,
                profile=pick.profile if pick else DEFAULT,
                against=against,
                move=move,
                reason=reason,
            )
        )
    objective = decisions[0]
    if recipe.edge is not None:
        decisions.append(edge_decision(recipe, evidence, floors))
    decisions.append(
        AliasDecision(
            alias=CHALLENGER,
            provider=objective.provider,
            variant=objective.variant,
            profile=objective.profile,
            move=objective.variant is not None,
            reason=f"best passing variant by {objective_key(recipe.registry.objective)} on this run",
        )
    )
    return decisions
