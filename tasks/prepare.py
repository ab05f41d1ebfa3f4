"""Tasks that start and end a pipeline run: recipe checks, the MLflow run, the work folder."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.preflight import load_and_check
from onnxforge.recipe import Recipe
from onnxforge.tracking import RunContext, finish_run, resolve_tracking_uri, start_run, state_dir


@task(name="validate-recipe", cache_policy=NO_CACHE)
def validate_recipe(recipe_path: str, overrides: dict[str, str] | None) -> Recipe:
    """Schema and preflight checks; raises RecipeError (file, field, expectation) before any work."""
    recipe = load_and_check(recipe_path, overrides)
    get_run_logger().info("recipe %s is valid (%s)", recipe.name, recipe_path)
    return recipe


@task(name="open-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def open_run(recipe: Recipe, recipe_path: str, flow_run_id: str) -> RunContext:
    """Create the pipeline's one MLflow run (params: the recipe) and its work folder."""
    tracking_uri = resolve_tracking_uri()
    experiment_id, run_id = start_run(
        tracking_uri,
        recipe.mlflow.experiment,
        run_name=f"{recipe.name}-{flow_run_id[:8]}",
        params=recipe.flat_params(),
        tags={
            "recipe_path": recipe_path,
            "flow_run_id": flow_run_id,
            "onnxforge.recipe": recipe.name,
        },
    )
    work_dir = state_dir() / "work" / run_id
    work_dir.mkdir(parents=True, exist_ok=True)
    get_run_logger().info("MLflow run %s at %s", run_id, tracking_uri)
    return RunContext(
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        run_id=run_id,
        work_dir=str(work_dir),
        flow_run_id=flow_run_id,
    )


@task(name="close-mlflow-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def close_run(context: RunContext, status: str) -> None:
    """Mark the MLflow run FINISHED or FAILED."""
    finish_run(context, status)
