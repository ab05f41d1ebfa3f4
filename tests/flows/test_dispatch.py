"""Benchmarks dispatched to a Prefect work pool (tasks/dispatch.py, flows/bench_dispatch.py),
against real servers (deployments/start_servers.sh: Prefect with its auth string, MLflow with
basic-auth and proxied artifacts) and a real `prefect worker` process.

The failure paths end as typed rows after a bounded wait, and the dispatching side goes on: no
worker on the pool, a file whose sha256 does not match what the worker downloads (refused, not
measured, while the other contender is measured), and a worker killed mid-measurement.
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

POOL = "bench-pool"
EMPTY_POOL = "nobody-pool"
WORKER = "test-worker"
HEARTBEAT_S = 5  # the worker's heartbeat interval: lost after 3 silent intervals


@dataclass
class Servers:
    state: Path
    env: dict[str, str]  # a client's environment: API URLs and credentials
    tracking_uri: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    state = tmp_path_factory.mktemp("dispatch") / "servers"
    prefect_port, mlflow_port = free_port(), free_port()
    env = _env(state, PREFECT_PORT=str(prefect_port), MLFLOW_PORT=str(mlflow_port))
    start = REPO / "deployments" / "start_servers.sh"
    try:
        started = subprocess.run(
            ["bash", str(start)], env=env, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        client_env = {
            **_env(state),
            **read_credentials(state / "credentials.env"),
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PREFECT_HOME": str(state.parent / "client-prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        for pool in (POOL, EMPTY_POOL):
            subprocess.run(
                [sys.executable, "-m", "prefect", "work-pool", "create", "--type", "process", pool],
                env=client_env,
                check=True,
                capture_output=True,
                timeout=120,
            )
        yield Servers(state, client_env, tracking_uri)
    finally:
        subprocess.run(
            ["bash", str(REPO / "deployments" / "stop_servers.sh")], env=env, timeout=120
        )


class Worker:
    """`prefect worker start` on POOL in a folder of its own, in its own process group."""

    def __init__(self, servers: Servers, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "worker.log"
        # In the environment of the worker and of everything it starts (inherited).
        self.marker = f"ONNXFORGE_HOME={folder / 'state'}".encode()
        env = {
            **servers.env,
            "PREFECT_HOME": str(folder / "prefect"),
            "ONNXFORGE_HOME": str(folder / "state"),
            "PREFECT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--name", WORKER],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"{text!r} not in the worker's log: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, as when its host dies: the flow runs
        and measuring processes run in sessions of their own, found by the environment they
        inherited from the worker."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        for pid in self.descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def descendants(self) -> list[int]:
        """The worker and the live processes it started (the worker's folder in their
        environment)."""
        marker = self.marker
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                    if (proc / "stat").read_text().split(")")[-1].split()[0] != "Z":
                        found.append(int(proc.name))
            except OSError:
                continue
        return found


@pytest.fixture
def worker(servers: Servers, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(servers, tmp_path / "worker")
    try:
        running.wait_for("started", 120)
        yield running
    finally:
        running.kill()


def _driver(servers: Servers, tmp_path: Path, **args) -> subprocess.Popen:
    args = {
        "work_dir": str(tmp_path / "driver"),
        "tracking_uri": servers.tracking_uri,
        "artifacts_root": str(servers.state / "mlartifacts"),
        "start_timeout_s": 60,
        "timeout_s": 240,
        **args,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.dispatch_driver", json.dumps(args)],
        cwd=REPO,
        env={**servers.env, "PREFECT_HOME": str(tmp_path / "driver-prefect")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _outcome(process: subprocess.Popen, timeout_s: float = 400) -> dict:
    stdout, stderr = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, (stdout + stderr)[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_pool_without_a_worker_ends_as_no_worker_after_the_start_timeout(
    servers: Servers, tmp_path: Path
) -> None:
    outcome = _outcome(_driver(servers, tmp_path, pool=EMPTY_POOL, start_timeout_s=5))
    rows = outcome["rows"]
    assert {row["variant"] for row in rows} == {"fp32", "simplified"}
    assert {row["status"] for row in rows} == {"no-worker"}
    assert all(EMPTY_POOL in row["reason"] and "within 5 s" in row["reason"] for row in rows)
    assert all(row["p50_ms"] is None and row["pool"] == EMPTY_POOL for row in rows)
    # Cancelled, so a worker that comes later does not measure for a run that moved on.
    assert outcome["state"] == "CANCELLED"
    assert outcome["elapsed_s"] < 60


def test_a_pool_that_does_not_exist_is_named_at_once(servers: Servers, tmp_path: Path) -> None:
    outcome = _outcome(_driver(servers, tmp_path, pool="no-such-pool"))
    assert {row["status"] for row in outcome["rows"]} == {"no-worker"}
    assert "work pool no-such-pool does not exist" in outcome["rows"][0]["reason"]
    assert outcome["flow_run_id"] == ""


def test_the_worker_measures_and_refuses_a_file_whose_sha256_differs(
    servers: Servers, worker: Worker, tmp_path: Path
) -> None:
    outcome = _outcome(_driver(servers, tmp_path, pool=POOL, tamper=True))
    rows = {row["variant"]: row for row in outcome["rows"]}
    assert outcome["state"] == "COMPLETED"
    tampered = rows["fp32"]
    assert tampered["status"] == "refused", tampered
    assert "sha256" in tampered["reason"] and "not measured" in tampered["reason"]
    assert tampered["p50_ms"] is None and tampered["rounds"] is None
    measured = rows["simplified"]
    assert measured["status"] == "ok", measured
    assert measured["p50_ms"] > 0 and measured["rounds"] == 2
    assert (measured["pool"], measured["worker"]) == (POOL, WORKER)
    assert measured["host"]


def test_a_worker_killed_mid_measurement_ends_as_worker_lost(
    servers: Servers, worker: Worker, tmp_path: Path
) -> None:
    # Rounds of 30 s each: the worker is killed well inside them.
    overrides = {"benchmark.time_budget_s": 30, "benchmark.iterations": 100_000}
    driver = _driver(servers, tmp_path, pool=POOL, overrides=overrides)
    worker.wait_for("measuring 2 variant(s)", 180)
    deadline = time.monotonic() + 120  # the worker, its flow run, a measuring process
    while len(worker.descendants()) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(worker.descendants()) >= 3
    time.sleep(3)  # inside the 30 s rounds
    killed_at = time.monotonic()
    worker.kill()
    deadline = time.monotonic() + 30  # SIGKILL is delivered, not awaited
    while worker.descendants() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.descendants() == []
    outcome = _outcome(driver)
    waited = time.monotonic() - killed_at
    assert {row["status"] for row in outcome["rows"]} == {"worker-lost"}, outcome["rows"]
    reason = outcome["rows"][0]["reason"]
    assert f"worker {WORKER} of pool {POOL} stopped sending heartbeats" in reason
    assert outcome["state"] == "CRASHED"
    # Three missed heartbeats plus polling, far inside the 240 s dispatch timeout.
    assert waited < 120


def test_a_benchmark_past_the_dispatch_timeout_is_cancelled_and_its_process_stopped(
    servers: Servers, worker: Worker, tmp_path: Path
) -> None:
    # Last: the killed worker above may leave this host's benchmark slot leased for 120 s, and
    # waiting for it is part of what a timeout must bound.
    idle = sorted(worker.descendants())  # the worker's own processes, before any flow run
    overrides = {"benchmark.time_budget_s": 30, "benchmark.iterations": 100_000}
    driver = _driver(servers, tmp_path, pool=POOL, overrides=overrides, timeout_s=25)
    worker.wait_for("measuring 2 variant(s)", 180)
    outcome = _outcome(driver)
    rows = outcome["rows"]
    assert {row["status"] for row in rows} == {"timeout"}, rows
    assert "did not finish within 25 s" in rows[0]["reason"]
    assert outcome["state"] == "CANCELLED"
    # Cancelling reached the worker, which stopped the flow run's process (and so its
    # measurements); the worker itself goes on.
    deadline = time.monotonic() + 60
    while sorted(worker.descendants()) != idle and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(worker.descendants()) == idle
    assert worker.process.poll() is None
