"""`register.approval: required`: the flow pauses with a typed form; the Prefect API answers it."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import DEFAULT_RECIPE, FAST

pytestmark = pytest.mark.slow


def _paused_run_id(deadline_s: float = 600) -> str:
    """The flow run that is waiting for approval (polling the Prefect API, bounded)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState

    stop = time.monotonic() + deadline_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < stop:
            paused = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name={"any_": ["Paused"]}))
            )
            if paused:
                return str(paused[0].id)
            time.sleep(2)
    raise AssertionError("no flow run paused for approval")


def _run_and_answer(name: str, answer: dict) -> object:
    from prefect.flow_runs import resume_flow_run

    from flows.onnx_pipeline import onnx_pipeline

    overrides = {
        **FAST,
        "register.model_name": name,
        "register.approval": "required",
        "register.approval_timeout_s": "600",
    }
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["registration"] = onnx_pipeline(
                recipe_path=str(DEFAULT_RECIPE), overrides=overrides
            )
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    flow_run_id = _paused_run_id()
    assert "registration" not in outcome  # still waiting: nothing moved before the answer
    resume_flow_run(flow_run_id, run_input=answer)
    worker.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    return outcome["registration"]


def test_rejection_keeps_champion_and_approval_moves_it(
    prefect_harness: None, mlflow_store: str
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    name = "digits-approval"
    client = mlflow.MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    rejected = _run_and_answer(name, {"approve": False, "note": "not tonight"})
    assert rejected.version is not None and not rejected.champion_moved
    assert rejected.reason.startswith("rejected: not tonight")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")
    assert str(client.get_model_version_by_alias(name, "challenger").version) == rejected.version

    approved = _run_and_answer(name, {"approve": True, "note": "looks good"})
    assert approved.champion_moved and approved.reason.endswith("approved: looks good")
    assert str(client.get_model_version_by_alias(name, "champion").version) == approved.version
