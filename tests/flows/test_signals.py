"""Ctrl-C, a group-wide SIGTERM and a lost embedded server each end `onnxforge run` within
seconds: the MLflow run is ended (KILLED, or FAILED when the server died) and no process is left.
The embedded stores it made are private (0600)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE, REPO
from tests.flows.test_states import (
    CHEAP,
    LONG_BENCH,
    _cmdline,
    _descendants,
    _group_members,
    _identity,
    _runs,
    _wait_for,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("fault", "status"),
    [("sigint", "KILLED"), ("group-sigterm", "KILLED"), ("server-killed", "FAILED")],
)
def test_the_run_ends_within_seconds_with_its_mlflow_run_ended(
    tmp_path: Path, fault: str, status: str
) -> None:
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(ONNXFORGE_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [sys.executable, "-m", "flows.cli", "run", str(DEFAULT_RECIPE)]
    for key, value in {**CHEAP, **LONG_BENCH}.items():
        command += ["--set", f"{key}={value}"]
    log_path = tmp_path / "cli.log"
    with log_path.open("w") as log:
        cli = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    seen: dict[tuple[int, str], str] = {}  # (pid, start time) -> command line

    def measuring() -> bool:
        assert cli.poll() is None, log_path.read_text()[-3000:]
        for pid in _descendants(cli.pid):
            identity = _identity(pid) or (pid, "")
            seen[identity] = _cmdline(pid) or seen.get(identity, "")  # latest: exec keeps the pid
        return any("onnxforge.bench_worker" in line for line in seen.values())

    try:
        _wait_for(measuring, 600, "a benchmark worker")
        before = len(log_path.read_text().splitlines())
        if fault == "sigint":
            cli.send_signal(signal.SIGINT)
        elif fault == "group-sigterm":  # what a terminal or a supervisor sends
            os.killpg(cli.pid, signal.SIGTERM)
        else:
            # read now: a command line first seen mid-exec (the procs wrapper) may be stale
            (server,) = [p for p in _descendants(cli.pid) if "create_app" in _cmdline(p)]
            os.kill(server, signal.SIGKILL)
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    output = log_path.read_text()
    alive = lambda: [i for i in seen if _identity(i[0]) == i] + _group_members(cli.pid)  # noqa: E731
    _wait_for(lambda: not alive(), 10, f"the CLI's processes to end: {alive()}")
    (run,) = _runs(f"sqlite:///{home / 'mlflow.db'}")
    assert run.info.status == status, output[-3000:]
    for store in (home / "mlflow.db", home / "prefect" / "prefect.db"):  # private to the user
        assert stat.S_IMODE(store.stat().st_mode) == 0o600, store
    # The embedded server's own output goes to its log, never between the run's lines.
    server_log = home / "prefect" / "server.log"
    assert server_log.is_file() and "uvicorn" not in output.lower(), output[-2000:]
    if fault == "server-killed":
        after = output.splitlines()[before:]
        assert "Traceback" not in output
        assert any(f"its log: {server_log}" in line for line in after), after
        assert [line for line in after if line.startswith("error:")] == [
            next(line for line in after if "the embedded Prefect server" in line)
        ]
