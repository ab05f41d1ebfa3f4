"""The run's outcome in Prefect: artifacts on the flow run (not on a task run), the final state's
one-line message, and the onnxforge.* events, read back from a real (test-harness) server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import DEFAULT_RECIPE, FAST

MOVED = "onnxforge.champion.moved"
REGISTERED = "onnxforge.model.registered"


def _registration(model: str):
    from onnxforge.records import AliasDecision, Registration

    decisions = (
        AliasDecision(
            alias="champion",
            provider="CPUExecutionProvider",
            variant="int8-dynamic",
            version="2",
            against="1",
            move=True,
            reason="1.30x [1.12, 1.41] faster than v1 at cpu bs1",
        ),
        AliasDecision(
            alias="challenger",
            provider="CPUExecutionProvider",
            variant="int8-dynamic",
            version="2",
            move=True,
            reason="the run's candidate",
        ),
    )
    return Registration(
        model_name=model,
        version="2",
        variant="int8-dynamic",
        model_id="m-1",
        champion_moved=True,
        reason=decisions[0].reason,
        decisions=decisions,
        versions={"int8-dynamic": "2"},
    )


async def _read(flow_run_id: UUID, event_prefix: str, resource_id: str, want: int):
    """The flow run, its artifacts and the onnxforge events about `resource_id` (polled: the
    server persists events a moment after they arrive)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        event_filter = EventFilter(
            event=EventNameFilter(prefix=[event_prefix]),
            resource=EventResourceFilter(id=[resource_id]),
        )
        deadline = time.monotonic() + 60
        while True:
            events = (await client.read_events(filter=event_filter, limit=50)).events
            if len(events) >= want or time.monotonic() > deadline:
                return run, artifacts, events
            await asyncio.sleep(1)


def test_outcome_attaches_to_the_flow_run_and_emits_events(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect import flow

    from onnxforge.records import BenchResult, ParityResult
    from onnxforge.tracking import RunContext
    from tasks.outcome import publish_outcome

    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "latency_by_batch.png").write_bytes(b"\x89PNG\r\n\x1a\nplot")
    context = RunContext(
        tracking_uri="http://127.0.0.1:5000",
        experiment_id="1",
        run_id="abc123",
        work_dir=str(tmp_path),
    )
    bench = [
        BenchResult(
            variant="int8-dynamic", provider="CPUExecutionProvider", batch_size=1, status="ok"
        )
    ]
    parity = [ParityResult(variant="int8-dynamic", passed=True)]
    registration = _registration("outcome-model")

    @flow(name="outcome-probe")
    def probe(model: str):
        return publish_outcome(_registration(model), "# summary", bench, parity, context)

    assert probe("outcome-direct") == _registration("outcome-direct")  # a direct call's value
    state = probe("outcome-model", return_state=True)
    assert state.result() == registration
    flow_run_id = state.state_details.flow_run_id

    run, artifacts, events = asyncio.run(
        _read(flow_run_id, "onnxforge.", "onnxforge.model.outcome-model", want=2)
    )
    assert run.state.is_completed()
    assert run.state.message == "outcome-model v2 (int8-dynamic): champion moved from v1"
    keys = {a.key: a for a in artifacts}
    assert set(keys) >= {
        "onnxforge-summary",
        "onnxforge-mlflow-run",
        "onnxforge-benchmark",
        "onnxforge-benchmark-plots",
    }
    assert all(a.task_run_id is None for a in keys.values())  # the flow run's own, not a task's
    assert "data:image/png;base64," in keys["onnxforge-benchmark-plots"].data
    assert "#/experiments/1/runs/abc123" in keys["onnxforge-mlflow-run"].data

    by_name: dict[str, list] = {}
    for event in events:
        by_name.setdefault(event.event, []).append(event)
    moved = by_name[MOVED]
    assert {e.payload["alias"] for e in moved} == {"champion"}  # challenger is not a champion
    payload = moved[0].payload
    assert payload["model"] == "outcome-model"
    assert payload["version"] == "2"
    assert payload["previous"] == "1"
    assert payload["variant"] == "int8-dynamic"
    assert payload["mlflow_run_id"] == "abc123"
    assert "faster than v1" in payload["reason"]
    assert [e.payload["version"] for e in by_name[REGISTERED]] == ["2"]


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (
            {"champion_moved": False, "reason": "within noise"},
            "m v2 (int8-dynamic): champion stays at v1: within noise",
        ),
        (
            {"version": None, "variant": None, "champion_moved": False, "decisions": ()},
            "nothing registered: no variant passed parity",
        ),
    ],
)
def test_outcome_message_names_version_and_promotion(update, expected) -> None:
    from tasks.outcome import outcome_message

    registration = _registration("m")
    if "reason" in update:  # the champion decision carries the reason of a stay
        champion = registration.decisions[0].model_copy(
            update={"move": False, "reason": update["reason"]}
        )
        update = {**update, "decisions": (champion,)}
    else:
        update = {**update, "reason": "no variant passed parity"}
    assert outcome_message(registration.model_copy(update=update)) == expected


@pytest.mark.slow
def test_a_pipeline_run_ends_with_its_outcome_on_the_flow_run(
    prefect_harness: None, mlflow_store: str
) -> None:
    from flows.onnx_pipeline import onnx_pipeline

    overrides = {**FAST, "register.model_name": "outcome-digits"}
    state = onnx_pipeline(str(DEFAULT_RECIPE), overrides=overrides, return_state=True)
    registration = state.result()
    assert registration.version == "1"  # a direct caller gets the Registration
    run, artifacts, events = asyncio.run(
        _read(
            state.state_details.flow_run_id,
            "onnxforge.",
            "onnxforge.model.outcome-digits",
            want=2,
        )
    )
    assert run.state.message.startswith(f"outcome-digits v1 ({registration.variant}): champion")
    flow_artifacts = {a.key for a in artifacts if a.task_run_id is None}
    assert {"onnxforge-summary", "onnxforge-benchmark", "onnxforge-mlflow-run"} <= flow_artifacts
    names = {e.event for e in events}
    assert REGISTERED in names
    if registration.champion_moved:
        assert MOVED in names
