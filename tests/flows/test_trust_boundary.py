"""A recipe or override that names `os:system` runs nothing: not under `onnxforge validate`, not
under `onnxforge run` (each in its own process), and not through the flow's `overrides`
parameter, which is what a deployment run (the Prefect UI or API) calls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnxforge.errors import RecipeError
from tests.conftest import DEFAULT_RECIPE, REPO
from tests.recipe_files import write_recipe

pytestmark = pytest.mark.slow


def _marker_overrides(marker: Path) -> list[dict[str, str]]:
    return [
        {"model.architecture": "os:system", "model.kwargs.command": f"touch {marker}"},
        {"model": f'{{architecture: "os:system", kwargs: {{command: "touch {marker}"}}}}'},
    ]


def _cli(
    command: str, recipe: Path, sets: dict[str, str], home: Path
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "flows.cli", command, str(recipe)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    return subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ONNXFORGE_HOME": str(home)},
        timeout=300,
    )


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("source", ["recipe-file", "set-fields", "set-section"])
def test_os_system_is_refused_by_the_cli(tmp_path: Path, command: str, source: str) -> None:
    marker = tmp_path / "MARKER"
    if source == "recipe-file":
        model = {"architecture": "os:system", "kwargs": {"command": f"touch {marker}"}}
        recipe, sets = write_recipe(tmp_path, {"model": model}), {}
        expected = "model.architecture: import path 'os:system' is outside the import allow-list"
    else:
        recipe = DEFAULT_RECIPE
        sets = _marker_overrides(marker)[source == "set-section"]
        expected = "overrides may not change model.architecture"
    result = _cli(command, recipe, sets, tmp_path / "state")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not marker.exists()
    assert not (tmp_path / "state").exists(), "a refused recipe must not create any state"


@pytest.mark.parametrize("form", ["fields", "section"])
def test_os_system_override_is_refused_on_the_deployment_path(
    prefect_harness: None, mlflow_store: str, tmp_path: Path, form: str
) -> None:
    from flows.onnx_pipeline import onnx_pipeline

    marker = tmp_path / "MARKER"
    overrides = _marker_overrides(marker)[form == "section"]
    with pytest.raises(RecipeError, match="overrides may not change model.architecture"):
        onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides=overrides)
    assert not marker.exists()


def test_os_system_recipe_is_refused_on_the_deployment_path(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    from flows.onnx_pipeline import onnx_pipeline

    marker = tmp_path / "MARKER"
    model = {"architecture": "os:system", "kwargs": {"command": f"touch {marker}"}}
    recipe = write_recipe(tmp_path, {"model": model})
    with pytest.raises(RecipeError, match="outside the import allow-list"):
        onnx_pipeline(recipe_path=str(recipe), overrides=None)
    assert not marker.exists()


def _deployment_run(deployment_id, parameters: dict, enforce_schema: bool = True):
    """Create a flow run of the deployment through the API (as the UI's form or an API client
    does), then run it the way a worker does: `python -m prefect.flow_engine ENTRYPOINT` in a new
    process.
    Returns the flow run's final state and the process's output."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    async def create():
        async with get_client() as client:
            return await client._client.post(
                f"/deployments/{deployment_id}/create_flow_run",
                json={"parameters": parameters, "enforce_parameter_schema": enforce_schema},
            )

    try:
        flow_run_id = asyncio.run(create()).json()["id"]
    except PrefectHTTPStatusError as refused:
        return None, str(refused)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXFORGE_TRUST")}
    env.update(PREFECT__FLOW_RUN_ID=flow_run_id, PREFECT_API_URL=PREFECT_API_URL.value())
    result = subprocess.run(
        [sys.executable, "-m", "prefect.flow_engine", "flows/onnx_pipeline.py:onnx_pipeline"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    async def state():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state

    return asyncio.run(state()), result.stdout + result.stderr


def test_a_deployment_run_through_the_api_runs_no_code_and_reads_no_other_recipe(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    from deployments.definitions import served_deployments

    deployment_id = served_deployments()[0].apply()
    marker = tmp_path / "MARKER"
    for overrides in _marker_overrides(marker):
        state, output = _deployment_run(deployment_id, {"overrides": overrides})
        assert state is not None and state.is_failed(), output[-2000:]
        assert "overrides may not change model.architecture" in output
    assert not marker.exists()

    model = {"architecture": "os:system", "kwargs": {"command": f"touch {marker}"}}
    recipe = str(write_recipe(tmp_path, {"model": model}))
    refused, answer = _deployment_run(deployment_id, {"recipe_path": recipe})
    assert refused is None and "recipe_path" in answer  # the server's schema: configs/ only
    state, output = _deployment_run(deployment_id, {"recipe_path": recipe}, enforce_schema=False)
    assert state is not None and state.is_failed(), output[-2000:]
    assert "a deployment run takes a recipe from" in output
    assert not marker.exists()
