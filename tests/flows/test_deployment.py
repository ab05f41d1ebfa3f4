"""The nightly deployment registers with a real (test-harness) Prefect server, schedule included."""

from __future__ import annotations

import asyncio
import importlib.util

import yaml

from tests.conftest import REPO


def _serve_module():
    spec = importlib.util.spec_from_file_location("serve", REPO / "deployments" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_serve_registers_the_nightly_schedule(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client

    serve = _serve_module()
    deployment_id = serve.nightly_deployment().apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    deployment = asyncio.run(read())
    assert deployment.name == "digits-nightly"
    assert deployment.parameters == {"recipe_path": "configs/digits_cnn.yaml"}
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]


def test_prefect_yaml_points_at_the_flow_and_an_existing_recipe() -> None:
    config = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]
    module_path, _, flow_name = deployment["entrypoint"].partition(":")
    assert (REPO / module_path).is_file()
    assert flow_name == "onnx_pipeline"
    assert (REPO / deployment["parameters"]["recipe_path"]).is_file()
    assert deployment["schedules"][0]["cron"] == "0 2 * * *"
