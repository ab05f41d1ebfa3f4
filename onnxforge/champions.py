"""The versions that hold a champion alias when a run starts: fetched, verified, scored here.

A run compares its candidate only with numbers it measured itself, so the current champion's file
is downloaded (its sha256 checked against the version's tag), run on this run's test split, and
timed in this run's interleaved rounds.
"""

from __future__ import annotations

import json
from pathlib import Path

from onnxforge.aliases import current_version, fetch_verified
from onnxforge.data_record import DataRecord
from onnxforge.errors import IntegrityError, Sha256Mismatch
from onnxforge.promotion import fetched_aliases
from onnxforge.recipe import Recipe
from onnxforge.records import ChampionRecord
from onnxforge.tracking import client


def fetch_champions(recipe: Recipe, tracking_uri: str, work_dir: Path) -> list[ChampionRecord]:
    """One record per version holding champion or champion-<provider>; errors other than
    'no such model or alias' propagate (fail closed: an outage is not 'no champion')."""
    mlflow_client = client(tracking_uri)
    name = recipe.registry.model_name
    holders: dict[str, tuple[object, list[str]]] = {}
    for alias, _ in fetched_aliases(recipe):
        version = current_version(mlflow_client, name, alias)
        if version is not None:
            holders.setdefault(str(version.version), (version, []))[1].append(alias)
    records = []
    for number, (version, aliases) in sorted(holders.items()):
        tags = version.tags  # type: ignore[attr-defined]
        common = {
            "version": number,
            "aliases": tuple(dict.fromkeys(aliases)),
            "variant": tags.get("variant", "unknown"),
            "sha256": tags.get("sha256", ""),
            "profiles": stored_profiles(tags),
        }
        try:
            path = fetch_verified(
                mlflow_client, name, number, work_dir / "champions" / f"v{number}"
            )
        except IntegrityError as error:
            tampered = isinstance(error, Sha256Mismatch)
            records.append(
                ChampionRecord(
                    **common, path=None, verified=False, tampered=tampered, reason=str(error)
                )
            )
            continue
        records.append(
            ChampionRecord(
                **common, path=str(path), verified=True, size_bytes=Path(path).stat().st_size
            )
        )
    return records


def stored_profiles(tags: dict[str, str]) -> dict[str, dict]:
    """provider short name -> the runtime profile a version's `profile.<provider>` tag holds
    (a tag that is not a JSON object is left out: the champion then runs ONNX Runtime's
    defaults)."""
    found = {}
    for key, value in tags.items():
        if key.startswith("profile."):
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                found[key.removeprefix("profile.")] = parsed
    return found


def evaluate_champions(
    recipe: Recipe,
    checkpoint: str,
    champions: list[ChampionRecord],
    data: DataRecord,
) -> list[ChampionRecord]:
    """Score each verified champion on this run's test split, against this run's source model."""
    from onnxforge.adapters import get_adapter
    from onnxforge.batching import run_accepted
    from onnxforge.data_record import read_splits
    from onnxforge.parity import ParityBar, compare_outputs, parity_provider
    from onnxforge.runtime import make_session
    from onnxforge.training import load_source_model
    from onnxforge.variants import EXACT, VARIANTS

    verified = [c for c in champions if c.path is not None]
    if not verified:
        return champions
    splits = read_splits(data)
    model = load_source_model(recipe, checkpoint, splits)
    reference = get_adapter(recipe.model.framework).predict(model, splits.x_test)
    evaluated = []
    for champion in champions:
        if champion.path is None:
            evaluated.append(champion)
            continue
        provider = (
            parity_provider(recipe.benchmark, champion.variant)
            if champion.variant in VARIANTS
            else None
        )
        try:
            # where this run checks the same kind of variant (an fp16 champion needs a GPU)
            session = make_session(champion.path, provider or "CPUExecutionProvider")
            outputs = run_accepted(session, splits.x_test)  # at the batch it accepts
        except Exception as error:  # noqa: BLE001 - ORT refuses inputs of another shape or type
            # with several exception types; the champion is then not comparable, which is a result
            reason = f"it does not run on this run's inputs: {str(error).splitlines()[0][:200]}"
            evaluated.append(champion.model_copy(update={"reason": reason}))
            continue
        tolerance = (
            VARIANTS[champion.variant].default_tolerance if champion.variant in VARIANTS else EXACT
        )
        names = [o.name for o in session.get_outputs()]
        bar = ParityBar(tolerance, recipe.parity.accuracy_drop_budget)
        result = compare_outputs(champion.label, reference, outputs, splits.y_test, bar, names)
        evaluated.append(champion.model_copy(update={"evaluation": result}))
    return evaluated
