"""The consumer side of the registry: pull a verified model, verify every version, move aliases by hand.

A deployment gets its file through `pull`, which refuses a file whose sha256 differs from the
version's `sha256` tag; a bare `mlflow.onnx.load_model('models:/NAME@champion')` checks nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onnxforge.aliases import (
    MODEL_FILE,
    MoveNote,
    alias_history,
    all_versions,
    current_version,
    default_actor,
    fetch_verified,
    move_alias,
)
from onnxforge.deploy_info import CLASS_LABELS_TAG, PREPROCESSING_TAG
from onnxforge.errors import IntegrityError, RefusedError, UsageError
from onnxforge.metrics import provider_short
from onnxforge.promotion import CHAMPION, provider_alias
from onnxforge.providers import PROVIDERS
from onnxforge.registration import STATE
from onnxforge.tracking import client

DEFAULT_ALIAS = CHAMPION
# profile.<provider short name>: onnxforge.profiles.deployed_profile, JSON
PROFILE_TAG_PREFIX = "profile."
NO_PROFILE = (
    "nothing says how it was measured, so session_from builds ONNX Runtime's default session "
    "(CPUExecutionProvider unless given a provider)"
)
MANIFEST_FILE = "manifest.json"
PULL_FILES = frozenset({MODEL_FILE, MANIFEST_FILE})
PULL_ROOT = "pulled"  # default_folder's parent, relative to the working folder
# MLflow's alias rule (mlflow/utils/validation.py): alphanumerics, '_' and '-'; 'latest' and
# 'v<N>' are reserved because `models:/NAME@latest` and version URIs mean something else.
ALIAS_PATTERN = re.compile(r"^[\w-]+$")
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


# ---------------------------------------------------------------- arguments


def parse_ref(ref: str, provider: str | None = None) -> tuple[str, str | None, str | None]:
    """NAME, NAME@ALIAS or NAME/VERSION -> (name, alias, version); exactly one of alias/version."""
    by_provider = _provider_alias(provider) if provider else None
    if "/" in ref:  # MLflow model names cannot contain '/'
        name, _, version = ref.rpartition("/")
        if not version.isdigit() or int(version) < 1:
            raise UsageError(f"{ref!r}: expected NAME/VERSION with a version number >= 1")
        alias = None
    else:
        name, at, alias = ref.rpartition("@") if "@" in ref else (ref, "", "")
        alias = check_alias(alias) if at else None
        version = None
    if not name:
        raise UsageError(f"{ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION")
    if alias is None and version is None:
        alias = by_provider or DEFAULT_ALIAS
    return name, alias, version


def _provider_alias(provider: str) -> str:
    """champion-<short> for a known provider; an unknown provider is a usage error."""
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    return provider_alias(provider)


def check_alias(alias: str) -> str:
    """An alias name MLflow accepts and that is not reserved."""
    if not ALIAS_PATTERN.match(alias) or RESERVED_ALIAS.match(alias):
        raise UsageError(
            f"bad alias {alias!r}: use letters, digits, '_' and '-' (not 'latest' or 'v<N>')"
        )
    return alias


def check_version(version: str) -> str:
    """A version number as MLflow writes it."""
    if not str(version).isdigit() or int(version) < 1:
        raise UsageError(f"bad version {version!r}: expected a number >= 1")
    return str(int(version))


# ---------------------------------------------------------------- registry reads


def _registered_model(mlflow_client: Any, name: str) -> Any:
    """The registered model, or a one-line refusal when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RefusedError(f"no registered model named {name!r}") from None
        raise


def _get_version(mlflow_client: Any, name: str, version: str) -> Any:
    """One version, or a one-line refusal naming what is missing."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    _registered_model(mlflow_client, name)  # says "no registered model" when that is the cause
    raise RefusedError(f"{name} has no version {version}")


def _by_alias(mlflow_client: Any, name: str, alias: str) -> Any:
    """The version `alias` points at, or a refusal listing the aliases that do exist."""
    version = current_version(mlflow_client, name, alias)
    if version is not None:
        return version
    held = sorted(getattr(_registered_model(mlflow_client, name), "aliases", {}) or {})
    raise RefusedError(f"{name} has no alias {alias!r} (aliases: {', '.join(held) or 'none'})")


# ---------------------------------------------------------------- pull


def default_folder(ref: str, provider: str | None = None) -> Path:
    """Where `pull` writes when no folder is given: `pulled/NAME@ALIAS` (or `pulled/NAME@vN`),
    relative to the working folder. One folder per alias, so pulls of `champion` and
    `champion-cpu` never share one; '@' is in neither a model name nor an alias, so two
    references never map to the same folder."""
    name, alias, version = parse_ref(ref, provider)
    return Path(PULL_ROOT) / f"{name}@{alias if alias else f'v{version}'}"


def pull(tracking_uri: str, ref: str, to: Path | None = None, provider: str | None = None) -> dict:
    """Download, sha256-check and write model.onnx + manifest.json into `to` (default:
    `default_folder(ref, provider)`); returns the manifest."""
    name, alias, version = parse_ref(ref, provider)
    to = Path(to if to is not None else default_folder(ref, provider)).expanduser().resolve()
    _check_destination(to)  # before any download
    mlflow_client = client(tracking_uri)
    found = (
        _get_version(mlflow_client, name, version)
        if version
        else _by_alias(mlflow_client, name, alias)
    )
    created = _make_parents(to.parent)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.pull-"))
    try:
        path = fetch_verified(mlflow_client, name, str(found.version), staging)
        manifest = build_manifest(found, path, ref, alias, provider)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the folder is meant to be shared
        _install(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return manifest


def _check_destination(to: Path) -> None:
    """`to` must be absent, empty, or hold exactly a previous pull (model.onnx + manifest.json)."""
    if to.exists() and not to.is_dir():
        raise UsageError(f"--to {to}: exists and is not a folder")
    if not to.is_dir():
        return
    present = {entry.name for entry in to.iterdir()}
    foreign = sorted(present - PULL_FILES)
    if foreign or (present and MANIFEST_FILE not in present):
        shown = ", ".join(foreign[:5]) or ", ".join(sorted(present))
        raise UsageError(
            f"--to {to}: not empty and not a previous pull (holds {shown}); choose another folder"
        )


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing ancestors; returns those created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Undo _make_parents after a failure, so a refused pull leaves nothing behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _install(staging: Path, to: Path) -> None:
    """Swap the staged folder in: readers see the old pull or the new one, never a mix."""
    _check_destination(to)  # again: something may have written there during the download
    if not to.exists():
        os.rename(staging, to)
        return
    retired = to.parent / f".{to.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(to, retired)
    try:
        os.rename(staging, to)
    except OSError:
        os.rename(retired, to)
        raise
    shutil.rmtree(retired, ignore_errors=True)


# ---------------------------------------------------------------- manifest


def build_manifest(
    version: Any, path: Path, ref: str, alias: str | None, provider: str | None
) -> dict:
    """What a deployment needs to know about the file it got, from the version's tags and graph."""
    import onnxruntime

    tags = dict(version.tags or {})
    io = model_io(path)
    profile, profile_note = manifest_profile(version, alias, provider)
    return {
        "name": version.name,
        "version": str(version.version),
        "ref": ref,
        "alias": alias,  # the alias this pull resolved (None for NAME/VERSION)
        "aliases": sorted(getattr(version, "aliases", []) or []),
        "variant": tags.get("variant"),
        "provider": tags.get("provider") or provider,
        "sha256": tags.get("sha256"),
        "size_bytes": path.stat().st_size,
        **io,
        # how to build the session that was measured (onnxforge.runtime.session_from builds it)
        "profile": profile,
        "profile_note": profile_note,
        # what to do to raw features before the model sees them, and what class id i means
        "preprocessing": _preprocessing(version, io["inputs"]),
        "class_labels": _json_tag(version, CLASS_LABELS_TAG),
        "parity": _numbers(tags, "parity.", strip=True),
        "latency": {**_numbers(tags, "p50_ms."), **_numbers(tags, "bench.")},
        "speedup": {k: v for k, v in tags.items() if k.startswith("speedup.")},
        "objective": tags.get("objective"),
        "objective_value": _number(tags["objective_value"]) if "objective_value" in tags else None,
        "onnxruntime_version": tags.get("onnxruntime_version"),
        "onnxruntime_local": onnxruntime.__version__,
        "source_run_id": tags.get("source_run_id") or getattr(version, "run_id", None),
        "promotion": tags.get("promotion"),
        "state": tags.get(STATE),
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def profile_provider(tags: dict[str, str], alias: str | None, provider: str | None) -> str | None:
    """The provider whose profile a pull deploys: the alias champion-<p> means p, else
    `--provider`, else the first provider the version was chosen for (its `provider` tag)."""
    prefix = f"{CHAMPION}-"
    if alias and alias.startswith(prefix):
        short = alias[len(prefix) :]
        named = [name for name, spec in PROVIDERS.items() if spec.short == short]
        if named:
            return named[0]
    if provider:
        return provider
    listed = [p.strip() for p in (tags.get("provider") or "").split(",") if p.strip()]
    return listed[0] if listed else None


def manifest_profile(
    version: Any, alias: str | None, provider: str | None
) -> tuple[dict | None, str]:
    """The version's runtime profile for the pulled provider (its `profile.<short>` tag, written
    by onnxforge.profiles.deployed_profile), and a note saying where it came from or why there
    is none (a version registered before runtime profiles, or not chosen for that provider)."""
    tags = dict(version.tags or {})
    chosen = profile_provider(tags, alias, provider)
    number = f"v{version.version}"
    if chosen is None:
        return None, (
            f"none: {number} names no provider (no `provider` tag) and none was asked for; "
            f"{NO_PROFILE}"
        )
    key = f"{PROFILE_TAG_PREFIX}{provider_short(chosen)}"
    if key not in tags:
        held = sorted(k for k in tags if k.startswith(PROFILE_TAG_PREFIX))
        why = (
            f"it has profiles only for {', '.join(held)}"
            if held
            else "it was registered before runtime profiles were recorded"
        )
        return None, f"none: {number} has no `{key}` tag for {chosen} ({why}); {NO_PROFILE}"
    profile = _parsed(version, key, tags[key])
    if not isinstance(profile, dict) or not isinstance(profile.get("settings", {}), dict):
        raise RefusedError(
            f"{version.name} {number}: tag {key} is not a runtime profile object: "
            f"{tags[key][:200]!r}"
        )
    return profile, f"from {number}'s `{key}` tag: the profile it was measured and chosen with"


def _parsed(version: Any, key: str, text: str) -> Any:
    """A JSON tag's value; a refusal naming the version and tag when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        raise RefusedError(
            f"{version.name} v{version.version}: tag {key} is not JSON: {text[:200]!r}"
        ) from None


def _json_tag(version: Any, key: str) -> Any:
    """A JSON tag's value, or None when the version has no such tag (registered before it)."""
    text = dict(version.tags or {}).get(key)
    return None if text is None else _parsed(version, key, text)


def _preprocessing(version: Any, inputs: list[dict]) -> dict | None:
    """The `preprocessing` tag, with the single input's name filled in from the graph."""
    found = _json_tag(version, PREPROCESSING_TAG)
    if isinstance(found, dict) and len(inputs) == 1:
        for entry in found.get("inputs") or []:
            if isinstance(entry, dict) and entry.get("name") is None:
                entry["name"] = inputs[0]["name"]
    return found


def model_io(path: Path) -> dict:
    """Inputs and outputs (name, shape with symbolic dims as strings, element type) and opsets."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [_value_info(v) for v in model.graph.output],
        "opsets": {op.domain or "ai.onnx": op.version for op in model.opset_import},
    }


def _value_info(value: Any) -> dict:
    import onnx

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "shape": None, "elem_type": kind}
    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = [
            d.dim_param
            if d.HasField("dim_param")
            else d.dim_value
            if d.HasField("dim_value")
            else None
            for d in tensor.shape.dim
        ]
    elem_type = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
    return {"name": value.name, "shape": shape, "elem_type": elem_type}


def _number(text: str) -> float | bool | str:
    """A tag value as a JSON number where it is one (tags are strings, written with repr)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text  # NaN is not JSON


def _numbers(tags: dict[str, str], prefix: str, strip: bool = False) -> dict:
    return {
        (key[len(prefix) :] if strip else key): _number(value)
        for key, value in sorted(tags.items())
        if key.startswith(prefix)
    }


# ---------------------------------------------------------------- verify


def verify(tracking_uri: str, name: str) -> list[tuple[str, bool, str]]:
    """Check every version's file against its sha256 tag: (version, ok, one-line message)."""
    mlflow_client = client(tracking_uri)
    model = _registered_model(mlflow_client, name)
    holders: dict[str, list[str]] = {}
    for alias, number in sorted((getattr(model, "aliases", {}) or {}).items()):
        holders.setdefault(str(number), []).append(alias)
    results = []
    with tempfile.TemporaryDirectory(prefix="onnxforge-verify-") as scratch:
        for version in all_versions(mlflow_client, name):
            number = str(version.version)
            held = f" [{', '.join(holders[number])}]" if number in holders else ""
            try:
                path = fetch_verified(mlflow_client, name, number, Path(scratch) / f"v{number}")
            except IntegrityError as error:
                results.append((number, False, f"{error}{held}"))
                continue
            path.unlink()  # one file at a time: a registry can be larger than the disk
            sha = version.tags.get("sha256", "")
            results.append((number, True, f"sha256 {sha[:16]} matches{held}"))
    return results


# ---------------------------------------------------------------- alias moves by hand


def floors_failed(version: Any) -> str | None:
    """The quality floors a version is below (its `floors` tag, written at registration), or None
    when it cleared them or predates the tag."""
    floors = dict(version.tags or {}).get("floors", "passed").strip()
    return None if floors in ("", "passed") else floors


def _check_promotable(mlflow_client: Any, version: Any, alias: str, force: bool = False) -> None:
    """Refuse a version that never finished registering, or whose file fails its sha256, or that
    is below a quality floor unless `force`."""
    name, number = version.name, str(version.version)
    tags = dict(version.tags or {})
    below = floors_failed(version)
    if below and not force:
        raise RefusedError(
            f"refusing to move {alias} to {name} v{number}: below a quality floor ({below}); "
            "to move it anyway pass --force, with --reason saying why"
        )
    promotion, state = tags.get("promotion", ""), tags.get(STATE, "")
    if promotion.startswith("incomplete") or state == "incomplete":
        raise RefusedError(f"refusing to move {alias} to {name} v{number}: {promotion or state}")
    if state == "pending" or promotion == "pending":
        raise RefusedError(
            f"refusing to move {alias} to {name} v{number}: still pending (its run has not "
            "finished registering it; the next run of this model repairs a stopped one)"
        )
    status = str(getattr(version, "status", "READY"))
    if status != "READY":
        raise RefusedError(f"refusing to move {alias} to {name} v{number}: status {status}")
    with tempfile.TemporaryDirectory(prefix="onnxforge-promote-") as scratch:
        try:
            fetch_verified(mlflow_client, name, number, Path(scratch))
        except IntegrityError as error:
            raise IntegrityError(f"refusing to move {alias}: {error}") from None


def _record_on_version(mlflow_client: Any, version: Any, note: str) -> None:
    """Append the by-hand move to the version's `promotion` tag (every alias decision about it)."""
    earlier = dict(version.tags or {}).get("promotion", "")
    text = f"{earlier} | {note}" if earlier else note
    mlflow_client.set_model_version_tag(version.name, str(version.version), "promotion", text)


@dataclass(frozen=True)
class HandMove:
    """Why an alias is moved by hand, who moves it, and whether past the quality floors."""

    reason: str
    by: str
    force: bool = False


def _move_checked(mlflow_client: Any, name: str, version: str, alias: str, move: HandMove) -> dict:
    """The checks, then the move and its records; a no-op when the alias is already there."""
    reason, by, force = move.reason, move.by, move.force
    target = _get_version(mlflow_client, name, version)
    _check_promotable(mlflow_client, target, alias, force)
    below = floors_failed(target)
    holder = current_version(mlflow_client, name, alias)
    if holder is not None and str(holder.version) == str(version):
        return {"alias": alias, "version": str(version), "previous": str(version), "moved": False}
    if below:  # only reached with force: the records say so, ahead of the reason
        reason = f"forced past the quality floors ({below[:200]}): {reason}"
    previous = move_alias(mlflow_client, name, alias, str(version), MoveNote(reason, by))
    _record_on_version(mlflow_client, target, f"{alias} moved by hand by {by}: {reason}")
    move = {"alias": alias, "version": str(version), "previous": previous, "moved": True}
    return {**move, "forced_past": below} if below else move


def promote(
    tracking_uri: str,
    name: str,
    version: str,
    alias: str = DEFAULT_ALIAS,
    reason: str = "",
    by: str | None = None,
) -> dict:
    """Move `alias` to `version` by hand: refused for a missing, incomplete or tampered version,
    and for one below a quality floor (`promote_forced` moves it all the same, on the record)."""
    return _promote(tracking_uri, name, version, alias, HandMove(reason, by or "", False))


def promote_forced(
    tracking_uri: str,
    name: str,
    version: str,
    alias: str = DEFAULT_ALIAS,
    reason: str = "",
    by: str | None = None,
) -> dict:
    """`promote`, past a quality floor the version is below: the history and the version's
    `promotion` tag record it as forced, with the reason."""
    return _promote(tracking_uri, name, version, alias, HandMove(reason, by or "", True))


def _promote(tracking_uri: str, name: str, version: str, alias: str, move: HandMove) -> dict:
    reason, by, force = move.reason, move.by or None, move.force
    check_alias(alias)
    version = check_version(version)
    if not reason.strip():
        raise UsageError("--reason is required: say why the alias moves")
    mlflow_client = client(tracking_uri)
    actor = by or default_actor()
    return _move_checked(
        mlflow_client, name, version, alias, HandMove(reason.strip(), actor, force)
    )


def rollback(
    tracking_uri: str,
    name: str,
    alias: str = DEFAULT_ALIAS,
    by: str | None = None,
    reason: str | None = None,
    force: bool = False,
) -> dict:
    """Move `alias` back to where it pointed before its last recorded move (same checks as promote)."""
    check_alias(alias)
    mlflow_client = client(tracking_uri)
    _registered_model(mlflow_client, name)
    events = alias_history(mlflow_client, name, alias)
    if not events:
        raise RefusedError(f"{name}@{alias} has no recorded moves; nothing to roll back")
    last = events[-1]
    holder = current_version(mlflow_client, name, alias)
    now = str(holder.version) if holder is not None else None
    if now != last.get("version"):
        # Someone moved it outside onnxforge (MLflow UI, API): undoing "the last move" is ambiguous.
        raise RefusedError(
            f"{name}@{alias} points at v{now} but its last recorded move was to "
            f"v{last.get('version')}; move it with `onnxforge promote`"
        )
    target = last.get("previous")
    if not target:
        raise RefusedError(
            f"{name}@{alias}: its last move (to v{now} at {last.get('at')}) had no previous "
            "version; nothing to roll back to"
        )
    why = (reason or "").strip() or f"rollback of {alias} from v{now}"
    why += f" (undoes the move of {last.get('at')} by {last.get('by')}: {last.get('reason')})"
    move = HandMove(why, by or default_actor(), force)
    return _move_checked(mlflow_client, name, str(target), alias, move)
