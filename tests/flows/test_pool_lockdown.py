"""A work pool that deployments/deploy.py creates, against the real servers
(deployments/start_servers.sh, Prefect with its auth string) and a real `prefect worker`: a
flow run's job variables pick no command and no environment on the worker.

Two ways in, as a caller holding the auth string would try them: a run of a deployment with job
variables (the server refuses it: it is never created), and a plain flow run placed on the pool
with job variables (the server does not check those; the worker ignores them, starts the flow
as usual, and the run ends in a final state). A `command` would touch a marker file; an `env`
that sets PYTHONPATH to a folder with a sitecustomize.py would touch another in any Python
process started with it, alongside ONNXFORGE_TRUSTED_OVERRIDES and ONNXFORGE_IMPORT_MODULES.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.flows.test_server_auth import _env
from tests.servers import free_port, read_credentials

pytestmark = pytest.mark.slow

POOL = "locked-pool"
FINAL_WITHIN_S = 240  # a flow run's process start on 2 busy cores, with margin


@dataclass
class Stack:
    env: dict[str, str]  # a client's environment: the API URL and the auth string
    api_url: str
    auth: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("lockdown") / "servers"
    prefect_port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = _env(state, PREFECT_PORT=str(prefect_port), MLFLOW_PORT=str(free_port()), BIN=bin_dir)
    try:
        started = subprocess.run(
            ["bash", str(REPO / "deployments" / "start_servers.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
        credentials = read_credentials(state / "credentials.env")
        api_url = f"http://127.0.0.1:{prefect_port}/api"
        client_env = {
            **_env(state),
            **credentials,
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(state.parent / "client-prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(REPO),
        }
        client_env.pop("ONNXFORGE_TRUSTED_OVERRIDES", None)
        client_env.pop("ONNXFORGE_IMPORT_MODULES", None)
        yield Stack(client_env, api_url, credentials["PREFECT_API_AUTH_STRING"])
    finally:
        subprocess.run(
            ["bash", str(REPO / "deployments" / "stop_servers.sh")], env=env, timeout=120
        )


def _settings(stack: Stack):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: stack.api_url, PREFECT_API_AUTH_STRING: stack.auth})


@pytest.fixture(scope="module")
def pool(stack: Stack) -> str:
    """POOL, made by the operator's command (first: a worker started on a pool that does not
    exist creates it with Prefect's default template)."""
    created = subprocess.run(
        [sys.executable, str(REPO / "deployments" / "deploy.py"), "--pool", POOL, "--pool-only"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert (
        created.stdout.strip()
        == f"work pool {POOL}: locked (job variables pass nothing to its workers)"
    )
    return POOL


@pytest.fixture
def worker(stack: Stack, pool: str, tmp_path: Path) -> Iterator[Path]:
    """`prefect worker start` on the pool in its own folder and process group; yields its log."""
    folder = tmp_path / "worker"
    folder.mkdir()
    log_path = folder / "worker.log"
    env = {
        **stack.env,
        "PREFECT_HOME": str(folder / "prefect"),
        "ONNXFORGE_HOME": str(folder / "state"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "started" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _final_state(client, flow_run_id, log_path: Path):
    deadline = time.monotonic() + FINAL_WITHIN_S
    while time.monotonic() < deadline:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_final():
            return state
        time.sleep(1)
    raise AssertionError(
        f"flow run {flow_run_id} is {state.name} after {FINAL_WITHIN_S} s: "
        + log_path.read_text(errors="replace")[-3000:]
    )


def test_a_locked_pools_worker_takes_no_command_and_no_environment_from_a_run(
    stack: Stack, worker: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Scheduled

    from deployments.deploy import LOCKED_TEMPLATE
    from tests.pool_lockdown_probe import probe

    command_marker = tmp_path / "command-ran"
    env_marker = tmp_path / "env-reached-a-process"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "sitecustomize.py").write_text(f"open({str(env_marker)!r}, 'w').close()\n")
    env = {
        "ONNXFORGE_TRUSTED_OVERRIDES": "1",
        "ONNXFORGE_IMPORT_MODULES": "posix",
        "PYTHONPATH": str(hostile),
    }
    # What the worker's own environment gives a flow run: the sitecustomize works there.
    subprocess.run([sys.executable, "-c", ""], env={**os.environ, **env}, check=True)
    assert env_marker.exists()
    env_marker.unlink()

    with _settings(stack), get_client(sync_client=True) as client:
        assert client.read_work_pool(POOL).base_job_template == LOCKED_TEMPLATE
        flow_id = client.create_flow_from_name("pool-lockdown-probe")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="probe",
            work_pool_name=POOL,
            entrypoint="tests.pool_lockdown_probe:probe",
            pull_steps=[],
        )
        for job_variables in (
            {"command": f"touch {command_marker}"},
            {"env": env},
            {"working_dir": str(hostile)},
        ):
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(
                    deployment_id,
                    parameters={"out": str(tmp_path / "never.json")},
                    job_variables=job_variables,
                )
            assert refused.value.response.status_code == 422
            assert "Additional properties are not allowed" in refused.value.response.text
        # Placed on the pool directly: the server stores these job variables unchecked.
        plain = client.create_flow_run(
            probe,
            parameters={"out": str(tmp_path / "plain.json")},
            state=Scheduled(),
            work_pool_name=POOL,
            job_variables={"command": f"touch {command_marker}", "env": env},
        )
        control = client.create_flow_run_from_deployment(
            deployment_id, parameters={"out": str(tmp_path / "control.json")}
        )
        plain_state = _final_state(client, plain.id, worker)
        control_state = _final_state(client, control.id, worker)

    assert not command_marker.exists()
    assert not env_marker.exists()
    assert control_state.is_completed(), control_state
    seen = json.loads((tmp_path / "control.json").read_text())
    assert seen["ONNXFORGE_TRUSTED_OVERRIDES"] is None
    assert seen["ONNXFORGE_IMPORT_MODULES"] is None
    # The plain run has no deployment to load its flow from: the engine the worker started (not
    # the command) finds no flow and the run ends Crashed, not Pending.
    assert plain_state.type.value in ("CRASHED", "FAILED"), plain_state
    assert not (tmp_path / "plain.json").exists()
