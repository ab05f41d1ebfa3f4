"""A real `mlflow server` for tests that need the REST API (registry, artifact proxy), not SQLite.

Registered in tests/conftest.py through `pytest_plugins`; started once per session, on demand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Migrating a fresh SQLite store and importing MLflow take several seconds on 2 cores.
STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class MlflowServer:
    """A running server: its URI for MlflowClient and where it keeps the artifacts it proxies."""

    uri: str
    artifacts_dir: Path
    log_path: Path


def free_port() -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(process: subprocess.Popen, uri: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{tail}")
        if _healthy(uri):
            return
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"mlflow server not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's whole process group (uvicorn forks workers), then make sure."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One `mlflow server` (SQLite backend, proxied artifacts) for the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'db.sqlite'}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # 2 cores: the default 4 workers only slow the start
    ]
    log_path = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "wb") as log:
        # A new session makes the server its own process group, so teardown reaches its workers.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_healthy(process, uri, log_path)
        yield MlflowServer(uri=uri, artifacts_dir=artifacts, log_path=log_path)
    finally:
        _stop(process)


def read_credentials(path: Path) -> dict[str, str]:
    """The variables in deployments/start_servers.sh's credentials.env (`export KEY='value'`)."""
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value.strip("'")
    return values
