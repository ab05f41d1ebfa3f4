"""Honest states: the MLflow run ends the way the flow ended, a flow retry reuses its run, and
kill -9 of `onnxforge run` leaves no process, no held lock and no RUNNING run after the next start."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE, REPO

pytestmark = pytest.mark.slow

# Cheap everywhere except the benchmark, which must still be measuring when the CLI is killed.
CHEAP = {
    "train.epochs": "2",
    "variants": "{simplified: {}}",
    "benchmark.providers": "[CPUExecutionProvider]",
    "benchmark.batch_sizes": "[1]",
    "benchmark.warmup": "2",
    "benchmark.baseline": "false",
}
LONG_BENCH = {"benchmark.rounds": "50", "benchmark.iterations": "20000"}


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def _runs(uri: str, query: str = "") -> list:
    client = _client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, query)) if ids else []


# ---- the hooks, on a small flow that opens the MLflow run the way the pipeline does ----------


def _flow_that(end: str):
    from prefect import flow
    from prefect.runtime import flow_run

    from tasks.hooks import MLFLOW_RUN_HOOKS
    from tasks.prepare import close_run, open_run

    @flow(name=f"states-{end}", **MLFLOW_RUN_HOOKS)
    def states_flow(recipe) -> str:
        context = open_run(recipe, str(DEFAULT_RECIPE), str(flow_run.id))
        if end == "fail":
            raise ValueError("injected failure after the run was opened")
        if end == "crash":
            raise KeyboardInterrupt  # Prefect reads a BaseException as a crash
        close_run(context, "FINISHED")
        return context.run_id

    return states_flow


@pytest.mark.parametrize(("end", "status"), [("fail", "FAILED"), ("crash", "KILLED")])
def test_a_failed_or_crashed_flow_ends_its_mlflow_run_failed_or_killed(
    prefect_harness: None, mlflow_store: str, digits_recipe, end: str, status: str
) -> None:
    from prefect.client.orchestration import get_client

    raised = ValueError if end == "fail" else KeyboardInterrupt
    with pytest.raises(raised):
        _flow_that(end)(digits_recipe)
    (run,) = _runs(mlflow_store)
    assert run.info.status == status
    reason = run.data.tags["onnxforge.ended_reason"]
    assert ("Failed" if end == "fail" else "Crashed") in reason
    assert run.data.tags["mlflow.source.type"] == "JOB"
    assert run.data.tags["onnxforge.pid"] == str(os.getpid())
    with get_client(sync_client=True) as prefect_client:
        flow_run = prefect_client.read_flow_run(run.data.tags["flow_run_id"])
    assert flow_run.state.is_failed() if end == "fail" else flow_run.state.is_crashed()


def test_the_next_start_ends_a_killed_runs_mlflow_run_and_crashes_its_flow_run(
    prefect_harness: None, mlflow_store: str, digits_recipe
) -> None:
    """What kill -9 leaves (an MLflow run RUNNING, owned by a dead process, and its Prefect flow
    run Running: no hook ran) is ended by the next flow that opens a run."""
    import socket

    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from onnxforge.run_lifecycle import FLOW_RUN_TAG, HOST_TAG, PID_START_TAG, PID_TAG

    dead = subprocess.Popen(["true"])
    dead.wait()
    with get_client(sync_client=True) as prefect_client:
        killed_flow_run = prefect_client.create_flow_run(_flow_that("finish"), state=Running())
    orphan = _client(mlflow_store).create_run(
        _client(mlflow_store).create_experiment("states-orphan"),
        tags={
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(dead.pid),
            PID_START_TAG: "boot:1",
            FLOW_RUN_TAG: str(killed_flow_run.id),
        },
    )

    _flow_that("finish")(digits_recipe)

    ended = _client(mlflow_store).get_run(orphan.info.run_id)
    assert ended.info.status == "KILLED"
    with get_client(sync_client=True) as prefect_client:
        state = prefect_client.read_flow_run(killed_flow_run.id).state
    assert state.is_crashed() and orphan.info.run_id in state.message


def test_a_flow_retry_reopens_the_same_mlflow_run(
    prefect_harness: None, mlflow_store: str, digits_recipe
) -> None:
    from prefect import flow
    from prefect.runtime import flow_run

    from tasks.hooks import MLFLOW_RUN_HOOKS
    from tasks.prepare import close_run, open_run

    attempts: list[str] = []

    @flow(name="states-retry", retries=1, retry_delay_seconds=0, **MLFLOW_RUN_HOOKS)
    def flaky(recipe) -> str:
        context = open_run(recipe, str(DEFAULT_RECIPE), str(flow_run.id))
        attempts.append(context.run_id)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        close_run(context, "FINISHED")
        return context.run_id

    run_id = flaky(digits_recipe)
    assert attempts == [run_id, run_id]
    (run,) = _runs(mlflow_store)
    assert run.info.status == "FINISHED"  # the final state: no hook ended it FAILED in between


def test_the_host_benchmark_slot_is_a_global_limit_held_during_the_measurement(
    prefect_harness: None,
) -> None:
    from prefect.client.orchestration import get_client

    from tasks.locks import bench_host_lock, bench_lock_name

    def active_slots() -> int:
        with get_client(sync_client=True) as prefect_client:
            return prefect_client.read_global_concurrency_limit_by_name(
                bench_lock_name()
            ).active_slots

    with bench_host_lock(timeout_s=60):  # created with one slot on first use
        assert active_slots() == 1
    assert active_slots() == 0


# ---- kill -9 of the CLI, embedded mode ---------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name; None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else fields


def _identity(pid: int) -> tuple[int, str] | None:
    fields = _stat(pid)
    return (pid, fields[19]) if fields else None  # pid + start time: safe across pid reuse


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[2]) == pgid:  # field 5 of proc(5): pgrp
                members.append(int(entry.name))
    return members


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _kill_while_measuring(tmp_path: Path, sig: int) -> Path:
    """Start `onnxforge run` (embedded mode) in a session of its own, send `sig` once a benchmark
    worker runs, then wait until none of its processes is left; returns its ONNXFORGE_HOME."""
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(ONNXFORGE_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [sys.executable, "-m", "flows.cli", "run", str(DEFAULT_RECIPE)]
    for key, value in {**CHEAP, **LONG_BENCH}.items():
        command += ["--set", f"{key}={value}"]
    log = (tmp_path / "cli.log").open("w")
    cli = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    seen: dict[tuple[int, str], str] = {}  # (pid, start time) -> command line

    def record() -> None:
        for pid in _descendants(cli.pid):
            identity = _identity(pid)
            if identity:
                # The latest command line: a first sighting between fork and exec shows the
                # parent's, and exec keeps the pid and start time.
                seen[identity] = _cmdline(pid) or seen.get(identity, "")

    def measuring() -> bool:
        assert cli.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
        record()
        return any("onnxforge.bench_worker" in line for line in seen.values())

    try:
        _wait_for(measuring, 600, "a benchmark worker")
        record()
        cli.send_signal(sig)
        cli.wait(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
        log.close()
    assert any("prefect.server.api.server:create_app" in line for line in seen.values())

    def all_gone() -> bool:
        alive = [identity for identity in seen if _identity(identity[0]) == identity]
        return not _group_members(cli.pid) and not alive

    _wait_for(all_gone, 60, f"the CLI's processes to end: {seen}")
    return home


def _wait_for_free_bench_lock() -> None:
    """The machine-wide benchmark lock can be taken (other runs on this machine may hold it
    briefly, hence the bounded wait)."""
    from onnxforge.benchmark import machine_lock_path

    def lock_free() -> bool:
        with open(machine_lock_path(), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(lock, fcntl.LOCK_UN)
            return True

    _wait_for(lock_free, 60, "the benchmark lock")


def test_sigterm_of_the_cli_crashes_the_flow_and_ends_its_mlflow_run_killed(
    tmp_path: Path,
) -> None:
    home = _kill_while_measuring(tmp_path, signal.SIGTERM)
    _wait_for_free_bench_lock()
    # Prefect turns SIGTERM into a crash; the on_crashed hook ends the run, nobody else.
    (run,) = _runs(f"sqlite:///{home / 'mlflow.db'}")
    assert run.info.status == "KILLED", (tmp_path / "cli.log").read_text()[-3000:]
    assert "Crashed" in run.data.tags["onnxforge.ended_reason"]


def test_kill_9_of_the_cli_leaves_no_process_no_lock_and_no_running_run(tmp_path: Path) -> None:
    from onnxforge.run_lifecycle import end_orphaned_runs

    home = _kill_while_measuring(tmp_path, signal.SIGKILL)
    _wait_for_free_bench_lock()
    # The killed CLI could not close its MLflow run; the next start's clean-up ends it KILLED.
    uri = f"sqlite:///{home / 'mlflow.db'}"
    (left,) = _runs(uri, "attributes.status = 'RUNNING'")
    assert list(end_orphaned_runs(uri)) == [left.info.run_id]
    assert _runs(uri, "attributes.status = 'RUNNING'") == []
    ended = _client(uri).get_run(left.info.run_id)
    assert ended.info.status == "KILLED"
    assert "ended without closing it" in ended.data.tags["onnxforge.ended_reason"]


def test_a_flow_that_fails_mid_run_ends_its_mlflow_run_failed(tmp_path: Path) -> None:
    """A real fault: the experiment's artifact folder cannot be created (its parent is a file),
    so the run fails at its first artifact upload, after open-mlflow-run."""
    import mlflow

    home = tmp_path / "state"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("states-fault", artifact_location=(blocker / "artifacts").as_uri())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(ONNXFORGE_HOME=str(home), MLFLOW_TRACKING_URI=uri)
    command = [sys.executable, "-m", "flows.cli", "run", str(DEFAULT_RECIPE)]
    for key, value in {**CHEAP, "mlflow.experiment": "states-fault"}.items():
        command += ["--set", f"{key}={value}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0, result.stdout[-2000:]
    (run,) = _runs(uri)
    assert run.info.status == "FAILED", result.stdout[-2000:] + result.stderr[-2000:]
