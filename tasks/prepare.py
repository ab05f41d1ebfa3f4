"""Tasks that start and end a pipeline run: recipe checks, the MLflow run, the work folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from onnxforge.procs import EMBEDDED_SERVER_ENV
from onnxforge.recipe import Recipe
from onnxforge.run_lifecycle import end_orphaned_runs, open_flow_run, source_tags
from onnxforge.tracking import RunContext, finish_run, resolve_tracking_uri, state_dir
from onnxforge.trust import check_deployment_recipe
from tasks.cache import MLFLOW_IO_RETRIES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@task(name="validate-recipe", cache_policy=NO_CACHE)
def validate_recipe(recipe_path: str, overrides: dict[str, Any] | None) -> Recipe:
    """Schema and preflight checks; raises RecipeError (file, field, expectation) before any work."""
    from prefect.runtime import deployment

    recipe_file = recipe_path
    if deployment.id:  # the path came through the API or the UI form
        try:
            recipe_file = str(check_deployment_recipe(recipe_path, CONFIGS))
        except ValueError as error:
            raise RecipeError(f"{recipe_path}: recipe_path: {error}") from None
    recipe = load_and_check(recipe_file, overrides)
    get_run_logger().info("recipe %s is valid (%s)", recipe.name, recipe_path)
    return recipe


@task(name="open-mlflow-run", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def open_run(recipe: Recipe, recipe_path: str, flow_run_id: str) -> RunContext:
    """The flow run's one MLflow run (params: the recipe) and its work folder; a flow retry
    reopens the same run. First ends the runs that dead processes on this host left RUNNING."""
    logger = get_run_logger()
    tracking_uri = resolve_tracking_uri()
    for orphan, orphan_flow_run in end_orphaned_runs(tracking_uri).items():
        logger.warning("MLflow run %s was left RUNNING by a dead process: ended KILLED", orphan)
        if orphan_flow_run and crash_flow_run(orphan_flow_run, f"its MLflow run {orphan} was"):
            logger.warning(
                "its Prefect flow run %s was still Running: set Crashed", orphan_flow_run
            )
    experiment_id, run_id, reopened = open_flow_run(
        tracking_uri,
        recipe.mlflow.experiment,
        run_name=f"{recipe.name}-{flow_run_id[:8]}",
        params=recipe.flat_params(),
        tags={
            "recipe_path": recipe_path,
            "onnxforge.recipe": recipe.name,
            **source_tags(flow_run_id, _flow_run_url()),
        },
        flow_run_id=flow_run_id,
    )
    work_dir = state_dir() / "work" / run_id
    work_dir.mkdir(parents=True, exist_ok=True)
    logger.info("MLflow run %s at %s%s", run_id, tracking_uri, " (reopened)" if reopened else "")
    return RunContext(
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        run_id=run_id,
        work_dir=str(work_dir),
        flow_run_id=flow_run_id,
    )


def crash_flow_run(flow_run_id: str, what: str) -> bool:
    """Set a flow run whose process died with SIGKILL (no hook ran) to Crashed, when this Prefect
    server knows it and still shows it running; True when it did."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as prefect_client:
        try:
            state = prefect_client.read_flow_run(UUID(flow_run_id)).state
        except (ObjectNotFound, ValueError):  # another server's flow run, or not a flow run id
            return False
        if state is None or state.is_final():
            return False
        message = f"{what} left RUNNING by a process that ended without closing it"
        prefect_client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
    return True


def _flow_run_url() -> str | None:
    """The flow run's page in the Prefect UI; None for the CLI's temporary server, which has no
    UI and is gone when the run ends."""
    if os.environ.get(EMBEDDED_SERVER_ENV):
        return None
    from prefect.runtime import flow_run

    return flow_run.ui_url


@task(name="close-mlflow-run", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def close_run(context: RunContext, status: str) -> None:
    """End the MLflow run (FINISHED at the end of a flow that succeeded; the flow's state hooks
    end it FAILED or KILLED otherwise)."""
    finish_run(context, status)
