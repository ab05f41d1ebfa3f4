"""A provider's benchmark run on a Prefect work pool: start it, watch it, take its rows.

The measuring flow (flows/bench_dispatch.py) is registered as onnx-benchmark/<pool> and started
with run_deployment; nothing here waits without a bound. The outcomes that are not rows from
the worker are typed rows for every contender, and the pipeline goes on:
  no-worker       the pool does not exist, or no worker started the run within
                  benchmark.dispatch_start_timeout_s (the run is cancelled: a worker that
                  took it meanwhile is told to stop, one that comes later finds it cancelled);
  worker-lost     the run was running and the worker that started it (tagged on the run by the
                  measuring flow) has not sent a heartbeat for three of its heartbeat
                  intervals (the run is set Crashed);
  timeout         the run did not finish within benchmark.dispatch_timeout_s (cancelled: its
                  worker kills the measuring process);
  dispatch-failed the run ended Failed, Crashed or Cancelled, its rows were not readable, or
                  the Prefect API kept failing.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple
from uuid import UUID

from onnxforge.dispatch import (
    BENCH_ENTRYPOINT,
    BENCH_FLOW,
    WORKER_TAG_PREFIX,
    DispatchRequest,
    read_rows,
    unmeasured_rows,
)
from onnxforge.records import BenchResult

POLL_S = 2.0
CANCEL_WAIT_S = 30  # how long a worker gets to confirm a cancellation
API_TRIES = 3  # a Prefect API call that fails this often in a row ends the dispatch
HEARTBEAT_MISSES = 3  # a worker silent for this many of its heartbeat intervals is gone
DEFAULT_HEARTBEAT_S = 30  # Prefect's worker heartbeat interval when a worker does not say
# The measuring flow's one parameter (written out: tasks/ does not import flows/).
REQUEST_SCHEMA = {
    "title": "Parameters",
    "type": "object",
    "properties": {"request": {"title": "request", "type": "object", "position": 0}},
    "required": ["request"],
}


def ensure_bench_deployment(pool: str) -> str | None:
    """Create (or update) onnx-benchmark/<pool>; the reason when the pool does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            return (
                f"work pool {pool} does not exist on the Prefect server; create it (its "
                "template then lets no job variable through) and start a worker there: "
                f"python deployments/deploy.py --pool {pool} --pool-only, then prefect worker "
                f"start --pool {pool}"
            )
        flow_id = client.create_flow_from_name(BENCH_FLOW)
        client.create_deployment(
            flow_id=flow_id,
            name=pool,
            work_pool_name=pool,
            entrypoint=BENCH_ENTRYPOINT,
            pull_steps=[],  # the worker imports the installed package; no checkout to fetch
            parameter_openapi_schema=REQUEST_SCHEMA,
            tags=["onnxforge", "benchmark"],
            description="Measure one provider for a pipeline run elsewhere (tasks/dispatch.py).",
        )
    return None


class Heartbeats:
    """The pool's workers, alive while their heartbeats keep coming.

    A heartbeat counts when the server's timestamp of a worker's last heartbeat changes, timed by
    this host's monotonic clock: the clocks of the worker's host and of the server never enter
    the comparison. A worker is gone after HEARTBEAT_MISSES of its intervals without one; one the
    server already shows OFFLINE when first seen is gone from the start.
    """

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._seen: dict[str, tuple[Any, float, float]] = {}  # name -> (stamp, seen at, interval)

    def refresh(self, client: Any) -> None:
        now = time.monotonic()
        for worker in client.read_workers_for_work_pool(self.pool):
            if worker.last_heartbeat_time is None:
                continue
            interval = float(worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_S)
            before = self._seen.get(worker.name)
            if before is None:
                offline = str(worker.status).upper().endswith("OFFLINE")
                seen_at = float("-inf") if offline else now
                self._seen[worker.name] = (worker.last_heartbeat_time, seen_at, interval)
            elif before[0] != worker.last_heartbeat_time:
                self._seen[worker.name] = (worker.last_heartbeat_time, now, interval)

    def alive(self) -> list[str]:
        now = time.monotonic()
        return [
            name
            for name, (_, seen_at, interval) in self._seen.items()
            if now - seen_at <= HEARTBEAT_MISSES * interval
        ]

    def lost(self, tags: list[str]) -> str | None:
        """The worker running a flow run with these tags, when it is gone (while the run is not
        tagged yet: every worker of the pool, when all are gone); None while it lives."""
        alive = self.alive()
        prefix = WORKER_TAG_PREFIX
        named = [t.removeprefix(prefix) for t in tags if t.startswith(prefix)]
        if named:
            return None if named[0] in alive else f"worker {named[0]} of pool {self.pool}"
        return None if alive else f"every worker of pool {self.pool}"


def start_dispatched(request: DispatchRequest) -> UUID:
    """Start the measuring flow run on the request's pool; returns its id without waiting."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        f"{BENCH_FLOW}/{request.pool}",
        parameters={"request": request.model_dump(mode="json")},
        timeout=0,  # watched below, with bounds of our own
        tags=["onnxforge", "benchmark", request.provider],
    )
    return flow_run.id


def watch(
    flow_run_id: UUID, pool: str, start_timeout_s: float, timeout_s: float
) -> tuple[str, str]:
    """Poll the flow run to its end; ("ok", "") when it completed, else (status, reason)."""
    from prefect.client.orchestration import get_client

    started = time.monotonic()
    heartbeats = Heartbeats(pool)
    seen_running = False  # a run that ran and waits again (a retry) is not a missing worker
    with get_client(sync_client=True) as client:
        while True:
            run = _retrying(client.read_flow_run, flow_run_id)
            _retrying(heartbeats.refresh, client)
            elapsed = time.monotonic() - started
            if run.state is not None and run.state.is_final():
                return _final(run.state, flow_run_id, pool)
            running = run.state is not None and run.state.is_running()
            seen_running = seen_running or running
            if not seen_running and elapsed > start_timeout_s:
                alive = heartbeats.alive()
                state = cancel(client, flow_run_id, "no worker started it")
                if state.is_completed():  # it started and finished while being cancelled
                    return "ok", ""
                return "no-worker", (
                    f"no worker of pool {pool} started the benchmark within "
                    f"{start_timeout_s:.0f} s ("
                    + (f"live but busy: {', '.join(alive)}" if alive else "no live worker")
                    + f"); flow run {flow_run_id} {state.name}"
                )
            lost = heartbeats.lost(run.tags) if running else None
            if lost is not None:
                message = f"{lost} stopped sending heartbeats"
                client.set_flow_run_state(flow_run_id, _crashed(message), force=True)
                return "worker-lost", (
                    f"{message} after {elapsed:.0f} s; flow run {flow_run_id} set Crashed"
                )
            if elapsed > timeout_s:
                state = cancel(client, flow_run_id, "benchmark.dispatch_timeout_s passed")
                if state.is_completed():
                    return "ok", ""
                return "timeout", (
                    f"the benchmark on pool {pool} did not finish within {timeout_s:.0f} s; "
                    f"flow run {flow_run_id} {state.name}"
                )
            time.sleep(POLL_S)


def _final(state: Any, flow_run_id: UUID, pool: str) -> tuple[str, str]:
    if state.is_completed():
        return "ok", ""
    message = f": {state.message}" if state.message else ""
    return "dispatch-failed", f"flow run {flow_run_id} on {pool} ended {state.name}{message}"


def _crashed(message: str) -> Any:
    from prefect.states import Crashed

    return Crashed(message=message)


def cancel(client: Any, flow_run_id: UUID, message: str) -> Any:
    """Stop the flow run and return its final state (Completed when it won the race).

    A run no worker took is Cancelled at once; one a worker took is set Cancelling, on which its
    worker kills the run's process; after CANCEL_WAIT_S without that, it is forced Cancelled.
    """
    from prefect.states import Cancelled, Cancelling

    state = _retrying(client.read_flow_run, flow_run_id).state
    if state.is_final():
        return state
    target = Cancelled if state.is_scheduled() else Cancelling
    client.set_flow_run_state(flow_run_id, target(message=message))  # refused once it is final
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        state = _retrying(client.read_flow_run, flow_run_id).state
        if state.is_final():
            return state
        time.sleep(1)
    unconfirmed = f"{message}; its worker did not confirm within {CANCEL_WAIT_S} s"
    client.set_flow_run_state(flow_run_id, Cancelled(message=unconfirmed), force=True)
    return _retrying(client.read_flow_run, flow_run_id).state


def _retrying(call: Any, *args: Any) -> Any:
    """`call(*args)`, tried API_TRIES times 2 s apart when the Prefect API fails."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    for attempt in range(API_TRIES):
        try:
            return call(*args)
        except (httpx.HTTPError, PrefectHTTPStatusError):
            if attempt == API_TRIES - 1:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


class Dispatched(NamedTuple):
    """What a dispatch came back with: the rows, the flow run ('' when none was started), and
    the seconds the worker spent fetching and measuring (0 when it wrote no rows)."""

    rows: list[BenchResult]
    flow_run_id: str
    measure_s: float = 0.0


def dispatch(
    request: DispatchRequest, start_timeout_s: float, timeout_s: float, mlflow_client: Any
) -> Dispatched:
    """The request's rows, measured on its pool, or typed rows saying why not."""
    import httpx
    from mlflow.exceptions import MlflowException
    from prefect.exceptions import PrefectHTTPStatusError

    where = {"pool": request.pool}
    flow_run_id = None
    try:
        problem = ensure_bench_deployment(request.pool)
        if problem is not None:
            return Dispatched(unmeasured_rows(request, "no-worker", problem, where), "")
        flow_run_id = start_dispatched(request)
        status, reason = watch(flow_run_id, request.pool, start_timeout_s, timeout_s)
    except (httpx.HTTPError, PrefectHTTPStatusError) as error:
        # The run goes on without these rows; a measuring run it started is left to its worker.
        started = f" (flow run {flow_run_id})" if flow_run_id else ""
        reason = f"the Prefect API failed while dispatching{started}: {error}"
        rows = unmeasured_rows(request, "dispatch-failed", reason, where)
        return Dispatched(rows, str(flow_run_id or ""))
    if status != "ok":
        return Dispatched(unmeasured_rows(request, status, reason, where), str(flow_run_id))
    try:
        rows, measure_s = read_rows(mlflow_client, request, str(flow_run_id))
    except (MlflowException, OSError, ValueError, KeyError) as error:
        reason = f"flow run {flow_run_id} completed, but its rows are not usable: {error}"
        return Dispatched(
            unmeasured_rows(request, "dispatch-failed", reason, where), str(flow_run_id)
        )
    return Dispatched(rows, str(flow_run_id), measure_s)
