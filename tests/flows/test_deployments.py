"""The deployments (one per recipe, one definition for serve and work pool) and the example
automation, registered with a real (test-harness) Prefect server and read back."""

from __future__ import annotations

import asyncio

from tests.conftest import REPO


def _read_deployments(ids) -> list:
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return [await client.read_deployment(i) for i in ids]

    return asyncio.run(read())


def test_one_spec_per_recipe_with_its_own_name_schedule_and_parameters() -> None:
    from deployments.definitions import deployment_specs

    specs = deployment_specs()
    recipes = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert [s.recipe_path for s in specs] == [f"configs/{r}" for r in recipes]
    assert len({s.name for s in specs}) == len(specs)
    assert len({s.cron for s in specs}) == len(specs)  # staggered: never all at once
    for spec in specs:
        assert (REPO / spec.recipe_path).is_file()
        assert spec.name == f"{spec.recipe_path.split('/')[1].removesuffix('.yaml')}-nightly"
        assert {"onnxforge", "nightly"} <= set(spec.tags)
        assert spec.recipe_path in spec.description


def test_no_second_definition_can_take_over_a_served_deployment() -> None:
    # `prefect deploy` reads prefect.yaml from the working directory (or --prefect-file).
    candidates = [REPO / "prefect.yaml", *(REPO / "deployments").glob("*.y*ml")]
    assert [path for path in candidates if path.exists()] == []


def test_served_deployments_register_with_utc_schedules_and_a_concurrency_limit(
    prefect_harness: None,
) -> None:
    from deployments.definitions import deployment_specs, served_deployments

    ids = [deployment.apply() for deployment in served_deployments()]
    by_name = {d.name: d for d in _read_deployments(ids)}
    for spec in deployment_specs():
        deployment = by_name[spec.name]
        assert deployment.parameters == {"recipe_path": spec.recipe_path}
        assert set(deployment.tags) == set(spec.tags)
        assert deployment.description == spec.description
        assert deployment.global_concurrency_limit is None  # one run per recipe: tasks.locks
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == spec.cron
        assert schedule.schedule.timezone == "UTC"
    assert "text_transformer-nightly" in by_name


def test_deploy_registers_the_same_deployments_on_a_process_pool(prefect_harness: None) -> None:
    import pytest

    from deployments.definitions import deployment_specs, served_deployments
    from deployments.deploy import deploy_all

    for deployment in served_deployments():  # as `make serve` registers them
        deployment.apply()
    with pytest.raises(SystemExit, match="served by a process.*--replace"):
        deploy_all("onnxforge-test-pool")
    ids = deploy_all("onnxforge-test-pool", replace=True, concurrency_limit=3)
    deployments = {d.name: d for d in _read_deployments(ids)}
    for spec in deployment_specs():
        deployment = deployments[spec.name]
        assert deployment.work_pool_name == "onnxforge-test-pool"
        assert deployment.entrypoint == "flows/onnx_pipeline.py:onnx_pipeline"
        assert deployment.parameters == {"recipe_path": spec.recipe_path}
        assert deployment.global_concurrency_limit is None  # one run per recipe: tasks.locks
        # On a pool they all start at once and fan out, bounded by the pool's limit.
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
            ("0 2 * * *", "UTC")
        ]
    assert "pull-champion" in deployments
    assert _pool_limit("onnxforge-test-pool") == 3
    deploy_all("onnxforge-test-pool", replace=True, concurrency_limit=1)  # an existing pool
    assert _pool_limit("onnxforge-test-pool") == 1


def _pool_limit(name: str) -> int | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_work_pool(name).concurrency_limit


def test_the_example_automation_reacts_to_the_event_the_flow_emits(prefect_harness: None) -> None:
    from prefect.automations import Automation

    from deployments.automation import AUTOMATION_NAME, create_automation
    from deployments.pull_champion import pull_champion_deployment
    from tasks.outcome import CHAMPION_MOVED

    deployment_id = pull_champion_deployment().apply()
    create_automation()
    created = create_automation()  # run twice: it replaces, never duplicates
    automations = asyncio.run(_automations_named(AUTOMATION_NAME))
    assert [a.id for a in automations] == [created.id]
    stored = Automation.read(id=created.id)
    assert stored.trigger.expect == {CHAMPION_MOVED}
    assert stored.trigger.match.model_dump() == {"prefect.resource.id": "onnxforge.model.*"}
    (action,) = stored.actions
    assert action.type == "run-deployment"
    assert action.deployment_id == deployment_id
    assert action.parameters == {
        "model": "{{ event.payload.model }}",
        "alias": "{{ event.payload.alias }}",
    }


async def _automations_named(name: str) -> list:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_automations_by_name(name)
