"""Server mode (deployments/start_servers.sh) refuses unauthenticated requests on both servers and
answers cross-origin requests only from the Prefect UI's own origin."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.servers import free_port, read_credentials

pytestmark = pytest.mark.slow

CREDENTIAL_VARS = (
    "PREFECT_API_AUTH_STRING",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env = {k: v for k, v in env.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "STATE": str(state), **extra}


def _request(url: str, method: str = "GET", auth: str | None = None, headers=None):
    """(status, headers) of one request; HTTP errors are answers too."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if method == "POST":
        request.data = b"{}"
        request.add_header("Content-Type", "application/json")
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, int, int, str]]:
    state = tmp_path / "servers"
    prefect_port, mlflow_port = free_port(), free_port()
    env = _env(state, PREFECT_PORT=str(prefect_port), MLFLOW_PORT=str(mlflow_port))
    try:
        started = subprocess.run(
            ["bash", str(REPO / "deployments" / "start_servers.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        yield state, prefect_port, mlflow_port, started.stdout + started.stderr
    finally:
        subprocess.run(["bash", str(REPO / "deployments" / "stop_servers.sh")], env=env, timeout=60)


def test_both_servers_refuse_requests_without_credentials(servers) -> None:
    state, prefect_port, mlflow_port, output = servers
    assert "export PREFECT_API_URL=" in output, output
    credentials_file = state / "credentials.env"
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    creds = read_credentials(credentials_file)
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=1"

    assert _request(f"{prefect_api}/flows/filter", "POST")[0] == 401
    assert _request(f"{prefect_api}/flows/filter", "POST", "admin:wrong-password")[0] == 401
    assert (
        _request(f"{prefect_api}/flows/filter", "POST", creds["PREFECT_API_AUTH_STRING"])[0] == 200
    )
    assert _request(mlflow_api)[0] == 401
    user, password = creds["MLFLOW_TRACKING_USERNAME"], creds["MLFLOW_TRACKING_PASSWORD"]
    assert _request(mlflow_api, auth=f"{user}:{password}")[0] == 200

    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    _, headers = _request(f"{prefect_api}/flows/filter", "OPTIONS", headers=preflight)
    assert headers.get("access-control-allow-origin") in (
        None,
        "http://127.0.0.1:" + str(prefect_port),
    )
    assert headers.get("access-control-allow-origin") != "*"
    own = {**preflight, "Origin": f"http://127.0.0.1:{prefect_port}"}
    _, headers = _request(f"{prefect_api}/flows/filter", "OPTIONS", headers=own)
    assert headers.get("access-control-allow-origin") == f"http://127.0.0.1:{prefect_port}"


def test_partial_credentials_are_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "servers"
    env = _env(state, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="x" * 16)
    result = subprocess.run(
        ["bash", str(REPO / "deployments" / "start_servers.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PREFECT_API_AUTH_STRING" in result.stderr
    assert not (state / "prefect.pid").exists()


# Run against the server with its credentials: register the pull deployment (not served: the flow
# run it gets stays Scheduled), create the example automation, emit one champion move, and wait
# for the automation's flow run. Printed last: its parameters, as JSON.
AUTOMATION_SCRIPT = """
import json, sys, time, uuid
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from deployments.automation import create_automation
from deployments.pull_champion import pull_champion_deployment
from tasks.outcome import CHAMPION_MOVED

deployment_id = pull_champion_deployment().apply()
create_automation()
only_pull = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    emit_event(  # again every 10 s: the trigger service loads new automations on its own clock
        CHAMPION_MOVED,
        resource={"prefect.resource.id": "onnxforge.model.auto-model"},
        payload={"model": "auto-model", "version": "3", "alias": "champion", "reason": "test"},
        id=uuid.uuid4(),
    )
    EventsWorker.drain_all()
    for _ in range(10):
        time.sleep(1)
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=only_pull)
        if runs:
            print(json.dumps(runs[0].parameters))
            sys.exit(0)
sys.exit("no flow run of pull-champion within 120 s")
"""


def test_the_example_automation_runs_the_pull_when_a_champion_moves(servers) -> None:
    import json
    import sys

    state, prefect_port, mlflow_port, output = servers
    credentials = read_credentials(state / "credentials.env")
    env = {
        **_env(state),
        **credentials,
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
    }
    result = subprocess.run(
        [sys.executable, "-c", AUTOMATION_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    parameters = json.loads(result.stdout.strip().splitlines()[-1])
    assert parameters["model"] == "auto-model" and parameters["alias"] == "champion"


def test_credentials_the_mlflow_store_does_not_know_are_refused(servers) -> None:
    """The admin password is set on the first start; a later start with another one would
    report healthy servers that refuse every client, so it stops with a clear error."""
    state, prefect_port, mlflow_port, output = servers
    env = _env(state, PREFECT_PORT=str(prefect_port), MLFLOW_PORT=str(mlflow_port))
    subprocess.run(["bash", str(REPO / "deployments" / "stop_servers.sh")], env=env, timeout=60)
    other = {
        "PREFECT_API_AUTH_STRING": "admin:another-secret-value",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "another-secret-value",
    }
    result = subprocess.run(
        ["bash", str(REPO / "deployments" / "start_servers.sh")],
        env={**env, **other},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "MLflow refuses MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" in result.stderr
