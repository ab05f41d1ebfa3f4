"""The MLflow run's life: opened once per flow run, owned by a process, ended by the flow's state.

A run records which process owns it (`onnxforge.host`, `onnxforge.pid`, `onnxforge.pid_start`).
A process killed with SIGKILL cannot close its run, so every start ends the RUNNING runs whose
owner on this host is gone as KILLED. A flow retry finds its run by the `flow_run_id` tag and
reopens it instead of starting a second one.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from onnxforge.tracking import client, start_run

FLOW_RUN_TAG = "flow_run_id"
HOST_TAG = "onnxforge.host"
PID_TAG = "onnxforge.pid"
PID_START_TAG = "onnxforge.pid_start"
ENDED_TAG = "onnxforge.ended_reason"
REPO_DIR = Path(__file__).resolve().parent.parent


def process_start(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of a live process: unique for its lifetime, across pid reuse."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    if fields[0] == "Z":  # a zombie has finished; only its parent has not reaped it yet
        return None
    return f"{boot_id}:{fields[19]}"  # field 22 of proc(5): starttime


def owner_tags() -> dict[str, str]:
    """Tags that name this process as the run's owner."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_START_TAG: process_start(pid) or "",
    }


def owner_gone(tags: dict[str, str]) -> bool:
    """True when the run's owner was a process on this host that no longer exists."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False  # another machine's run: only that machine can tell
    started = process_start(int(tags[PID_TAG]))
    return started is None or started != tags.get(PID_START_TAG)


def git_commit() -> str | None:
    """The commit of onnxforge's own checkout (not the working directory's), or None without git
    or outside a checkout; the one reading for the run's tag and every registered version's."""
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _user() -> str:
    """The login name; a container's uid without a passwd entry is named by its number."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def source_tags(flow_run_id: str, flow_run_url: str | None) -> dict[str, str]:
    """MLflow's own source fields, and the way back to the Prefect flow run."""
    tags = {
        "mlflow.source.name": "flows/onnx_pipeline.py",
        "mlflow.source.type": "JOB",
        "mlflow.user": _user(),
        "prefect.flow_run_id": flow_run_id,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if flow_run_url:
        tags["prefect.flow_run_url"] = flow_run_url
    return tags


def _experiment_ids(mlflow_client: Any) -> list[str]:
    ids, token = [], None
    while True:
        page = mlflow_client.search_experiments(max_results=1000, page_token=token)
        ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            return ids


def _search(mlflow_client: Any, query: str) -> list[Any]:
    ids = _experiment_ids(mlflow_client)
    runs, token = [], None
    for start in range(0, len(ids), 100):  # MLflow's search takes at most 100 experiments
        while True:
            page = mlflow_client.search_runs(
                ids[start : start + 100], query, max_results=1000, page_token=token
            )
            runs += list(page)
            token = page.token
            if not token:
                break
    return runs


def end_orphaned_runs(tracking_uri: str) -> dict[str, str]:
    """End as KILLED every RUNNING run whose owning process on this host is gone.

    Returns {MLflow run id: the Prefect flow run id it belonged to ("" when it has none)}."""
    mlflow_client = client(tracking_uri)
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    ended = {}
    for run in _search(mlflow_client, query):
        if owner_gone(run.data.tags):
            pid = run.data.tags.get(PID_TAG)
            reason = f"its process {pid} ended without closing it (found by process {os.getpid()})"
            mlflow_client.set_tag(run.info.run_id, ENDED_TAG, reason)
            mlflow_client.set_terminated(run.info.run_id, status="KILLED")
            ended[run.info.run_id] = run.data.tags.get(FLOW_RUN_TAG, "")
    return ended


def end_own_runs(tracking_uri: str, status: str, reason: str) -> list[str]:
    """End as `status` the RUNNING runs that this process owns; returns their ids."""
    mlflow_client = client(tracking_uri)
    tags = owner_tags()
    query = (
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{tags[HOST_TAG]}' "
        f"and tags.`{PID_TAG}` = '{tags[PID_TAG]}'"
    )
    ended = []
    for run in _search(mlflow_client, query):
        if run.data.tags.get(PID_START_TAG) == tags[PID_START_TAG]:  # not an earlier same pid
            mlflow_client.set_tag(run.info.run_id, ENDED_TAG, reason[:5000])
            mlflow_client.set_terminated(run.info.run_id, status=status)
            ended.append(run.info.run_id)
    return ended


def find_flow_run(tracking_uri: str, flow_run_id: str) -> Any | None:
    """The MLflow run that belongs to this Prefect flow run, if one was opened."""
    runs = _search(client(tracking_uri), f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'")
    return max(runs, key=lambda run: run.info.start_time) if runs else None


def open_flow_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, str],
    tags: dict[str, str],
    flow_run_id: str,
) -> tuple[str, str, bool]:
    """The flow run's MLflow run, RUNNING and owned by this process: reopened when a retry finds
    it, else created. Returns (experiment_id, run_id, reopened)."""
    tags = {**tags, **owner_tags(), FLOW_RUN_TAG: flow_run_id}
    existing = find_flow_run(tracking_uri, flow_run_id)
    if existing is None:
        experiment_id, run_id = start_run(tracking_uri, experiment, run_name, params, tags)
        return experiment_id, run_id, False
    mlflow_client = client(tracking_uri)
    run_id = existing.info.run_id
    for key, value in tags.items():  # params are immutable and the recipe is the same: kept
        mlflow_client.set_tag(run_id, key, value)
    mlflow_client.update_run(run_id, status="RUNNING")
    return existing.info.experiment_id, run_id, True


def end_flow_run(tracking_uri: str, flow_run_id: str, status: str, message: str) -> str | None:
    """End the flow run's MLflow run with `status`, the reason as a tag; its id, or None."""
    run = find_flow_run(tracking_uri, flow_run_id)
    if run is None:
        return None
    mlflow_client = client(tracking_uri)
    mlflow_client.set_tag(run.info.run_id, ENDED_TAG, (message or status)[:5000])
    mlflow_client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id
