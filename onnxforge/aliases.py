"""Registry aliases, read fail-closed and moved with a recorded history, and verified downloads.

Who moved `champion`, when and why is kept on the registered model itself, one JSON tag per alias
(`onnxforge.alias_history.<alias>`), so the answer lives wherever the registry lives. A version's
file is only handed out after its sha256 matches the version's `sha256` tag.

MLflow is imported inside the functions: importing it costs seconds, and the CLI's --help must not.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onnxforge.errors import IntegrityError, Sha256Mismatch
from onnxforge.onnx_files import sha256_of, write_atomically

HISTORY_TAG_PREFIX = "onnxforge.alias_history."
MODEL_FILE = "model.onnx"
# mlflow/utils/validation.py lets a registered-model tag value be MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
# = 100_000 characters, but the SQL store's column is narrower:
# mlflow/store/model_registry/dbmodels/models.py declares SqlRegisteredModelTag.value as
# String(5000) (only model_version_tags was widened to Text, migration bda7b8c39065). SQLite ignores
# VARCHAR lengths, PostgreSQL and MySQL do not, so the history stays within 5000 characters.
HISTORY_TAG_LIMIT = 5000
# One long promotion reason must not push every other event out of the tag.
REASON_LIMIT = 500
ACTOR_ENV = "ONNXFORGE_ACTOR"


def _is_missing(error: Exception, alias: str) -> bool:
    """True only for MLflow's two 'not there' answers: no such model, or no such alias.

    Over REST the alias case arrives as INVALID_PARAMETER_VALUE (HTTP 400), the same code as a
    malformed request, so the message is what tells them apart.
    """
    code = getattr(error, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    message = str(getattr(error, "message", error))
    return code == "INVALID_PARAMETER_VALUE" and (
        f"Registered model alias {alias} not found." in message
    )


def current_version(mlflow_client: Any, name: str, alias: str) -> Any | None:
    """The ModelVersion `alias` points at; None only when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # Fail closed: an outage, a 5xx or a permission error is not "no champion".
        if _is_missing(error, alias):
            return None
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _parse_history(key: str, value: str) -> list[dict]:
    """The events stored under one tag; a value that is not a list of events is refused."""
    try:
        events = json.loads(value)
    except json.JSONDecodeError as error:
        raise IntegrityError(f"tag {key} is not valid JSON ({error}); delete it to reset") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise IntegrityError(f"tag {key} is not a JSON list of events; delete it to reset")
    return events


def _model_tags(mlflow_client: Any, name: str) -> dict[str, str] | None:
    """The registered model's tags, or None when there is no such model."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(mlflow_client.get_registered_model(name).tags or {})
    except MlflowException as error:
        if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _fit(events: list[dict]) -> str:
    """The newest events that fit the tag limit, serialised (ASCII, so characters are bytes)."""
    kept = list(events)
    while True:
        value = json.dumps(kept, separators=(",", ":"))
        if len(value) <= HISTORY_TAG_LIMIT or len(kept) == 1:
            return value
        kept.pop(0)


@dataclass(frozen=True)
class MoveNote:
    """Why an alias moves, who moves it and from which run: what its history records."""

    reason: str
    by: str
    run_id: str | None = None


def move_alias(
    mlflow_client: Any, name: str, alias: str, version: str, note: MoveNote
) -> str | None:
    """Point `alias` at `version`, append the move to its history; returns the previous version."""
    holder = current_version(mlflow_client, name, alias)
    previous = str(holder.version) if holder is not None else None
    if previous == str(version):  # a retried move: nothing to do, nothing to record
        return previous
    key = HISTORY_TAG_PREFIX + alias
    stored = (_model_tags(mlflow_client, name) or {}).get(key)
    events = _parse_history(key, stored) if stored else []  # refuse before moving anything
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    event = {
        "alias": alias,
        "version": str(version),
        "previous": previous,
        "at": _now(),
        "by": note.by,
        "reason": note.reason[:REASON_LIMIT],
        "run_id": note.run_id,
    }
    # Written after the move: if this write fails, the caller sees the error (and the pipeline
    # puts the alias back); a history entry for a move that never happened would be worse.
    try:
        mlflow_client.set_registered_model_tag(name, key, _fit([*events, event]))
    except Exception:
        if previous is None:
            mlflow_client.delete_registered_model_alias(name, alias)
        else:
            mlflow_client.set_registered_model_alias(name, alias, previous)
        raise
    return previous


def alias_history(mlflow_client: Any, name: str, alias: str | None = None) -> list[dict]:
    """Recorded alias moves on `name` (one alias, or all), oldest first; [] for a missing model."""
    tags = _model_tags(mlflow_client, name) or {}
    events = []
    for key, value in tags.items():
        if not key.startswith(HISTORY_TAG_PREFIX):
            continue
        if alias is not None and key != HISTORY_TAG_PREFIX + alias:
            continue
        events.extend(_parse_history(key, value))
    # ISO-8601 UTC strings with a fixed format sort in time order; sorted() is stable per alias.
    return sorted(events, key=lambda event: str(event.get("at", "")))


def _download(mlflow_client: Any, name: str, version: str, into: Path) -> Path:
    """Download the version's model folder into `into`; returns the local folder."""
    import mlflow

    uri = mlflow_client.get_model_version_download_uri(name, str(version))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(into), tracking_uri=mlflow_client.tracking_uri
    )
    return Path(local)


def fetch_verified(mlflow_client: Any, name: str, version: str, dst_dir: Path) -> Path:
    """Download a version's model.onnx, check its sha256 against the version's tag, then place it
    at dst_dir/model.onnx; raises IntegrityError (and writes nothing to dst_dir) on a mismatch."""
    expected = mlflow_client.get_model_version(name, str(version)).tags.get("sha256", "")
    with tempfile.TemporaryDirectory(prefix="onnxforge-fetch-") as scratch:
        folder = _download(mlflow_client, name, version, Path(scratch))
        candidate = folder / MODEL_FILE
        actual = sha256_of(candidate) if candidate.is_file() else f"<no {MODEL_FILE}>"
        if not expected or actual != expected:
            tampered = expected and candidate.is_file()
            raise (Sha256Mismatch if tampered else IntegrityError)(
                f"{name} v{version}: sha256 mismatch: expected {expected or '<no sha256 tag>'}, "
                f"got {actual}"
            )
        # Copied under a temp name and renamed, so dst_dir never holds half a file.
        return write_atomically(
            Path(dst_dir) / MODEL_FILE, lambda temp: shutil.copyfile(candidate, temp)
        )


def all_versions(mlflow_client: Any, name: str) -> list[Any]:
    """Every version of `name`, all pages, oldest first (none for a missing model)."""
    quote = '"' if "'" in name else "'"
    versions, token = [], None
    while True:
        page = mlflow_client.search_model_versions(
            filter_string=f"name={quote}{name}{quote}", page_token=token
        )
        versions.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return sorted(versions, key=lambda v: int(v.version))


def default_actor() -> str:
    """Who is acting: $ONNXFORGE_ACTOR, else the login name, else 'unknown'."""
    configured = os.environ.get(ACTOR_ENV)
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return "unknown"
