"""The flow a work pool's worker runs to measure one provider for a pipeline run elsewhere.

The pipeline (tasks/dispatch.py) registers it as the deployment onnx-benchmark/<pool> on each
pool a recipe's `benchmark.pools` names and starts it with run_deployment. The worker needs
this package installed and, in its environment, the servers' addresses and credentials
(PREFECT_API_URL, PREFECT_API_AUTH_STRING, MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD). The worker's name is recorded on the rows it writes and tagged on
the flow run, so the dispatching flow can tell when that very worker stops heartbeating.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run


def _flow_run_name() -> str:
    request = flow_run.parameters.get("request", {})
    return f"benchmark-{request.get('provider', '?')}-{request.get('pool', '?')}"


def _tag_worker() -> None:
    """Tag this flow run with the worker that started it: the dispatching flow then watches
    that worker's heartbeat, not just any worker of the pool."""
    from prefect.client.orchestration import get_client

    from onnxforge.dispatch import WORKER_NAME_ENV, WORKER_TAG_PREFIX

    name = os.environ.get(WORKER_NAME_ENV)
    if not name:  # run by hand, not by a worker
        return
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(flow_run.id).tags
        client.update_flow_run(flow_run.id, tags=[*tags, f"{WORKER_TAG_PREFIX}{name}"])


@flow(name="onnx-benchmark", flow_run_name=_flow_run_name)
def benchmark_dispatched(request: dict[str, Any]) -> int:
    """Download the run's files by URI, verify their sha256, measure them on this host's
    provider in interleaved rounds, and write the rows into the run that asked.

    Args:
        request: A DispatchRequest (onnxforge.dispatch) as JSON: the benchmark settings, the
            provider, the pool, the MLflow run, and every file as an artifact URI with its
            sha256 (and for the framework baseline, the recipe as data).

    Returns the number of rows written.
    """
    from onnxforge.chatter import route_third_party_output
    from onnxforge.dispatch import DispatchRequest, write_rows
    from onnxforge.pipeline import benchmark_shipped
    from onnxforge.tracking import client, state_dir
    from tasks.locks import bench_host_lock

    route_third_party_output()
    parsed = DispatchRequest.model_validate(request)
    _tag_worker()
    # Never a URI from the request: the worker's credentials go only where its operator says.
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise RuntimeError(
            "MLFLOW_TRACKING_URI is not set in this worker's environment: start the worker "
            "with the tracking server's URI and credentials (MLFLOW_TRACKING_USERNAME / _PASSWORD)"
        )
    logger = get_run_logger()
    logger.info(
        "measuring %d variant(s) and %d champion(s) on %s for MLflow run %s",
        len(parsed.artifacts),
        len(parsed.champions),
        parsed.provider,
        parsed.run_id,
    )
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="dispatched-", dir=state))
    try:
        with bench_host_lock():  # one measurement at a time on this host, as for local runs
            started = time.monotonic()  # not counting the wait for this host's slot
            rows = benchmark_shipped(parsed, work_dir, tracking_uri)
            measure_s = time.monotonic() - started
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    write_rows(client(tracking_uri), parsed, str(flow_run.id), rows, measure_s)
    for variant, status, reason in dict.fromkeys((r.variant, r.status, r.reason) for r in rows):
        if status != "ok":
            logger.warning("%s on %s: %s (%s)", variant, parsed.provider, status, reason)
    return len(rows)
