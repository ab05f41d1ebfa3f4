"""Prefect cache keys for the expensive stages: a stored result is reused only while its files hold.

Prefect looks a task's result up by the key its cache key function returns. Results live in
Prefect's result storage (PREFECT_HOME/storage unless configured), so a rerun of the same recipe,
in a new flow run and a new MLflow run, finds them. A stored result whose files are gone or
changed must not be reused, and Prefect has no per-call "ignore this one" switch, so the key
function walks a short chain `<key>`, `<key>-r1`, `<key>-r2`, ...: the first stored result whose
files are intact is a hit, the first free slot is a miss (the task runs and its result is stored
there).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

from onnxforge.cache import files_intact
from onnxforge.errors import RecipeError

MAX_REBUILDS = 16  # after this many broken results under one key, stop caching it at all
RETRY_DELAYS_ENV = "ONNXFORGE_MLFLOW_RETRY_DELAYS"  # e.g. "2,5,15": one retry per delay


def _retry_delays() -> list[float]:
    """Seconds before each retry of an MLflow I/O task: $ONNXFORGE_MLFLOW_RETRY_DELAYS, read when
    the tasks are defined, else 2, 5 and 15 (an MLflow server restart takes seconds)."""
    configured = os.environ.get(RETRY_DELAYS_ENV, "")
    try:
        return [float(d) for d in configured.split(",") if d.strip()] or [2, 5, 15]
    except ValueError:
        raise RecipeError(
            f"{RETRY_DELAYS_ENV}: expected seconds separated by commas, e.g. 2,5,15; "
            f"got {configured!r}"
        ) from None


MLFLOW_IO_RETRIES: dict[str, Any] = {
    "retries": len(_retry_delays()),
    "retry_delay_seconds": _retry_delays(),
    "retry_jitter_factor": 0.5,  # runs that failed together do not retry in lockstep
}


def _usable_slot(base: str) -> str | None:
    from prefect.results import get_result_store

    store = get_result_store()
    for attempt in range(MAX_REBUILDS):
        key = base if attempt == 0 else f"{base}-r{attempt}"
        if not store.exists(key):
            return key
        if files_intact(store.read(key).result):
            return key
    return None


def verified_key(
    base_key: Callable[[dict[str, Any]], str],
) -> Callable[[Any, dict[str, Any]], str | None]:
    """A Prefect cache_key_fn: `base_key(task inputs)`, moved past stored results with broken files."""

    def cache_key(_context: Any, inputs: dict[str, Any]) -> str | None:
        return _usable_slot(base_key(inputs))

    return cache_key


CACHED = {
    "persist_result": True,
    # Long enough to outlive a weekend of failed runs; a changed recipe, dataset or code gets a
    # new key anyway.
    "cache_expiration": datetime.timedelta(days=30),
}
