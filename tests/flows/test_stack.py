"""The team stack (`make stack`: BACKEND=postgres deployments/start_servers.sh): Prefect and MLflow
keep their data in a PostgreSQL 15 cluster, MLflow proxies the artifacts (clients see
`mlflow-artifacts:` URIs), both servers refuse requests without credentials, the data survives a
restart, and stopping leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.flows.test_server_auth import _env, _request
from tests.servers import free_port, read_credentials

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START = ["bash", str(REPO / "deployments" / "start_servers.sh")]
STOP = ["bash", str(REPO / "deployments" / "stop_servers.sh")]

# Run against the stack with its credentials: one Prefect flow run, one MLflow run with an artifact.
# Printed last: the MLflow run's id and artifact URI.
CLIENT_SCRIPT = """
import mlflow
from prefect import flow

@flow(name="stack-smoke")
def smoke() -> int:
    return 1

assert smoke() == 1
mlflow.set_experiment("stack-smoke")
with mlflow.start_run() as run:
    mlflow.log_text("hello", "note.txt")
    mlflow.log_metric("m", 1.0)
print(run.info.run_id, run.info.artifact_uri)
"""


def _psql(env: dict[str, str], state: Path, database: str, sql: str) -> str:
    password = (state / "postgres_password").read_text().strip()
    result = subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", env["POSTGRES_PORT"], "-U", "onnxforge"]
        + ["-d", database, "-qtAX", "-c", sql],
        env={**env, "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _processes_under(state: Path) -> list[str]:
    """Command lines of live processes that name STATE (servers, postgres, workers); every
    process for `/`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def stack() -> Iterator[tuple[Path, dict[str, str]]]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not installed here ({PG_BIN}/initdb is missing)")
    # As root the cluster runs as the postgres user, which cannot enter pytest's 0700 tmp folders.
    base = Path(tempfile.mkdtemp(prefix="onnxforge-stack-"))
    base.chmod(0o755)
    state = base / "servers"
    env = _env(
        state,
        BACKEND="postgres",
        PREFECT_PORT=str(free_port()),
        MLFLOW_PORT=str(free_port()),
        POSTGRES_PORT=str(free_port()),
    )
    try:
        yield state, env
    finally:
        subprocess.run(STOP, env=env, timeout=120)
        subprocess.run(["rm", "-rf", str(base)], timeout=60)


def _start(env: dict[str, str]) -> str:
    started = subprocess.run(START, env=env, capture_output=True, text=True, timeout=420)
    output = started.stdout + started.stderr
    assert started.returncode == 0, output[-3000:]
    return output


def test_the_team_stack_keeps_its_data_in_postgres_and_proxies_artifacts(stack) -> None:
    state, env = stack
    output = _start(env)
    assert "export PREFECT_API_URL=" in output and "PostgreSQL: 127.0.0.1:" in output, output
    password = (state / "postgres_password").read_text().strip()
    assert not [line for line in _processes_under(Path("/")) if password in line]
    prefect_api = f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
    mlflow_uri = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    assert _request(f"{prefect_api}/flows/filter", "POST")[0] == 401
    assert _request(f"{mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401

    client_env = {
        **_env(state),
        **read_credentials(state / "credentials.env"),
        "PREFECT_API_URL": prefect_api,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "PREFECT_HOME": str(state.parent / "client-prefect-home"),
    }
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT],
        cwd=state.parent,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    run_id, artifact_uri = result.stdout.strip().splitlines()[-1].split()
    run_rows = f"SELECT count(*) FROM runs WHERE run_uuid = '{run_id}'"
    assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
    # The rows are in PostgreSQL, the artifact in the folder the server proxies.
    assert _psql(env, state, "mlflow", run_rows) == "1"
    flow_rows = "SELECT count(*) FROM flow WHERE name = 'stack-smoke'"
    assert _psql(env, state, "prefect", flow_rows) == "1"
    assert list((state / "mlartifacts-postgres").rglob("note.txt"))
    assert not (state / "mlflow.db").exists()

    # A restart reuses the cluster, its password and the data.
    subprocess.run(STOP, env=env, timeout=120, check=True)
    _start(env)
    assert _psql(env, state, "mlflow", run_rows) == "1"

    stopped = subprocess.run(STOP, env=env, capture_output=True, text=True, timeout=120)
    assert "stopped PostgreSQL" in stopped.stdout, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 30
    while _processes_under(state) and time.monotonic() < deadline:
        time.sleep(1)
    assert _processes_under(state) == []
    assert not os.path.exists(state / "postgres" / "data" / "postmaster.pid")
