"""A served deployment run that waits for approval longer than its concurrency lease lasts still
resumes and finishes; while it waits, a second run of the same recipe waits for it (one run per
recipe); an answer whose note contradicts the toggle is asked again.

Real processes throughout: `prefect server start` (with its repossessor, which frees the slot of
a lease that was not renewed), `deployments/serve.py`, and a process per flow run. Prefect's
recipe's lease lasts 60 s (tasks.locks.RECIPE_LEASE_S, the least Prefect's API grants) and is
renewed every 45 s; the server's repossessor is set to look for expired leases every 2 s instead
of 15, so a lease that was not renewed would be taken back at once. The pause below outlasts
three leases and four renewals. Before the fix a pause freed the deployment's slot: the second
run started at once, and the paused run was cancelled at its next renewal (225 s after it
started, which this pause also outlasts).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.locks import RECIPE_LEASE_S, recipe_lock_name
from tests.conftest import FAST, REPO
from tests.servers import free_port

pytestmark = pytest.mark.slow

PAUSE_S = 3 * RECIPE_LEASE_S + 10
RECIPE = "configs/digits_cnn.yaml"
DEPLOYMENT = "onnx-pipeline/digits_cnn-nightly"
MODEL = "digits-approval-deployment"
WAIT_S = 600  # a bound on each wait for a state, never reached when things work


@dataclass(frozen=True)
class Stack:
    api_url: str
    tracking_uri: str
    logs: Path


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen, marker: str) -> None:
    """SIGTERM the process group, then SIGKILL whatever it or its flow runs left (found by the
    marker in their environment)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def _wait(what: str, ready: Callable[[], object], log: Path, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} not within {timeout_s} s; {log.name}:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def stack(tmp_path: Path, mlflow_template: Path) -> Iterator[Stack]:
    """A Prefect server and `deployments/serve.py` with short leases; an MLflow SQLite store."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    database = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, database)
    marker = f"ONNXFORGE_TEST_STACK={tmp_path}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        {
            "ONNXFORGE_TEST_STACK": str(tmp_path),
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "MLFLOW_TRACKING_URI": f"sqlite:///{database}",
            "ONNXFORGE_HOME": str(tmp_path / "state"),
        }
    )
    server_command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    server_command += ["--port", str(port), "--no-ui", "--no-scheduler"]
    server = _start(server_command, env, tmp_path / "server.log")
    serve = None
    try:
        _wait("the Prefect server", lambda: _healthy(api_url), tmp_path / "server.log", 180)
        _register_as_before(api_url)
        serve = _start([sys.executable, "deployments/serve.py"], env, tmp_path / "serve.log")
        yield Stack(api_url, f"sqlite:///{database}", tmp_path)
    finally:
        if serve is not None:
            _stop(serve, marker)
        _stop(server, marker)


def _register_as_before(api_url: str) -> None:
    """The recipe's deployment as the previous version registered it: with a deployment
    concurrency limit of one (serve.py must remove it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.definitions import deployment_specs
    from flows.onnx_pipeline import onnx_pipeline

    (spec,) = [s for s in deployment_specs() if s.recipe_path == RECIPE]
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        onnx_pipeline.to_deployment(**{**spec.deployment_kwargs(), "concurrency_limit": 1}).apply()


def _logs(client, flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in found)


def _state(client, flow_run_id):
    return client.read_flow_run(flow_run_id).state


def _paused_or_over(client, flow_run_id) -> bool:
    state = _state(client, flow_run_id)
    return state.is_paused() or state.is_final()


def test_a_run_paused_past_its_lease_resumes_and_finishes_while_the_next_run_waits(
    stack: Stack,
) -> None:
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    serve_log = stack.logs / "serve.log"
    overrides = {
        **FAST,
        "register.model_name": MODEL,
        "register.approval": "required",
        "register.approval_timeout_s": "1800",
    }
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        served = "Your deployments are being served"
        _wait("serve.py serving", lambda: served in _tail(serve_log), serve_log, 180)
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.global_concurrency_limit is None  # serve.py removed the old limit
        first = client.create_flow_run_from_deployment(
            deployment.id, parameters={"recipe_path": RECIPE, "overrides": overrides}
        ).id
        _wait("the first run pausing", lambda: _paused_or_over(client, first), serve_log)
        assert _state(client, first).is_paused(), _logs(client, first)
        paused_at = time.monotonic()
        second = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"recipe_path": RECIPE, "overrides": {**FAST, "register.model_name": MODEL}},
        ).id
        waits = "another run of configs/digits_cnn.yaml is going on: this run waits for it to end"
        _wait(
            "the second run waiting or going on",
            lambda: waits in _logs(client, second) or _past_validation(client, second),
            serve_log,
        )
        assert waits in _logs(client, second)

        time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
        assert _state(client, first).is_paused(), _logs(client, first)
        assert _state(client, second).is_running()  # still waiting for the slot
        assert not _past_validation(client, second)
        limit = client.read_global_concurrency_limit_by_name(recipe_lock_name(RECIPE))
        assert (limit.limit, limit.active_slots) == (1, 1)  # renewed: never repossessed

        # A note that says the opposite of the toggle is not recorded: the run asks again.
        resume_flow_run(first, run_input={"approve": False, "note": "approved"})
        asked_again = 'approval answer not recorded: the note "approved" reads as approval'
        _wait("the question asked again", lambda: asked_again in _logs(client, first), serve_log)
        _wait("the first run pausing again", lambda: _paused_or_over(client, first), serve_log)
        assert _state(client, first).is_paused(), _logs(client, first)

        resume_flow_run(first, run_input={"approve": True, "note": "looks good"})
        final = _wait(
            "the first run ending",
            lambda: (state := _state(client, first)).is_final() and state,
            serve_log,
        )
        assert final.is_completed(), f"{final}\n{_logs(client, first)}"
        approved = "approval: approved: looks good"  # logs reach the API a moment after
        _wait("the approval in the log", lambda: approved in _logs(client, first), serve_log, 60)
        # the slot passes to the second run, which goes on past the wait
        _wait("the second run going on", lambda: _past_validation(client, second), serve_log)

    registry = mlflow.MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    champion = registry.get_model_version_by_alias(MODEL, "champion")
    assert "approved: looks good" in champion.tags["promotion"], champion.tags


def _past_validation(client, flow_run_id) -> bool:
    """Whether the run started a task after validating its recipe (it holds its recipe's slot)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    task_runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    return any(not t.name.startswith("validate-recipe") for t in task_runs)
