"""Where runs are tracked: the embedded default (SQLite + local artifacts) or the user's server.

Nothing here runs at import time; the flow resolves the store once and hands every task a
RunContext with the tracking URI and run id, because MLflow's active run is thread-local.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onnxforge.errors import UsageError
from onnxforge.records import Record

STATE_ENV = "ONNXFORGE_HOME"


class RunContext(Record):
    """Everything a task needs to log into the pipeline's one MLflow run."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    work_dir: str
    flow_run_id: str = ""


def state_dir() -> Path:
    """The project-local folder for generated state (MLflow store, artifacts, ONNX files)."""
    return Path(os.environ.get(STATE_ENV, ".onnxforge")).resolve()


def resolve_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite file in the state folder (created 0600)."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    store = state / "mlflow.db"
    # Created empty (a valid empty SQLite database) and private before MLflow adds its tables;
    # SQLite gives its journal and WAL files the database file's mode.
    try:
        os.close(os.open(store, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    return f"sqlite:///{store}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI (None for any other kind of store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0])


def existing_tracking_uri() -> str:
    """The tracking URI for the registry commands (pull, verify, promote, rollback), which work on
    models a run registered: a SQLite store that does not exist is a UsageError naming it, never
    created empty."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    uri = configured or f"sqlite:///{state_dir() / 'mlflow.db'}"
    store = sqlite_path(uri)
    if store is not None and not store.is_file():
        where = "MLFLOW_TRACKING_URI" if configured else f"{STATE_ENV} ({state_dir()})"
        raise UsageError(
            f"no MLflow store at {store} (from {where}): nothing was ever tracked there; "
            "set MLFLOW_TRACKING_URI to the store or server that holds the model"
        )
    return uri


# MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout by default:
# measured here (MLflow 3.17.2), one call to a closed local port took 246 s to fail, and one to
# a server that accepts and never answers had not failed after 6 minutes (8 tries of 120 s
# allow 16 minutes). With the defaults below the same call failed in 12 s against the closed
# port and in 53 s against the silent server, so an outage fails a task in about a minute; the
# task's own retries come on top. They are defaults: a value set in the environment wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def bounded_http_retries() -> None:
    """Set onnxforge's MLflow HTTP retry defaults (MLflow reads them at every request)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def client(tracking_uri: str) -> Any:
    """An MlflowClient bound to `tracking_uri`, with the fluent API pointed there too."""
    bounded_http_retries()
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The experiment's id, created on first use (artifacts in the state folder when embedded)."""
    mlflow_client = client(tracking_uri)
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        location = (state_dir() / "mlartifacts" / name).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def start_run(
    tracking_uri: str, experiment: str, run_name: str, params: dict[str, str], tags: dict[str, str]
) -> tuple[str, str]:
    """Open the pipeline's MLflow run with the recipe as params; returns (experiment_id, run_id)."""
    from mlflow.entities import Param

    experiment_id = ensure_experiment(tracking_uri, experiment)
    mlflow_client = client(tracking_uri)
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags)
    items = [Param(key, value[:6000]) for key, value in sorted(params.items())]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run.info.run_id, params=items[start : start + 100])
    return experiment_id, run.info.run_id


def log_metrics(
    context: RunContext,
    metrics: dict[str, float],
    step: int | None = None,
    model_id: str | None = None,
) -> None:
    """Log metrics into the pipeline's run (optionally linked to a LoggedModel)."""
    import mlflow

    client(context.tracking_uri)
    finite = {key: float(value) for key, value in metrics.items() if value is not None}
    if finite:
        mlflow.log_metrics(finite, step=step, run_id=context.run_id, model_id=model_id)


def finish_run(context: RunContext, status: str) -> None:
    """Close the run as FINISHED or FAILED."""
    client(context.tracking_uri).set_terminated(context.run_id, status=status)


def run_url(context: RunContext) -> str:
    """The run's page: on the tracking server, or on a local `mlflow ui` over the embedded store."""
    base = (
        context.tracking_uri if context.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    )
    return f"{base.rstrip('/')}/#/experiments/{context.experiment_id}/runs/{context.run_id}"


def ui_command(tracking_uri: str) -> str:
    """The command that shows the embedded store in the MLflow UI."""
    if tracking_uri.startswith("http"):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"
