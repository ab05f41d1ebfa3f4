"""Prefect global concurrency limits that onnxforge creates on first use."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onnxforge.procs import EMBEDDED_SERVER_ENV

# A slot whose holder was killed with SIGKILL is freed when its lease expires (the server's
# repossessor service); leases are renewed while the holder lives.
LEASE_S = 120
RECIPE_LEASE_S = 60  # the shortest lease Prefect's API grants; renewed every 45 s


def bench_lock_name() -> str:
    """The limit that lets one measurement at a time run on this host."""
    return f"onnxforge-bench-{socket.gethostname()}"


def ensure_limit(name: str, slots: int = 1) -> None:
    """Create the global concurrency limit `name` with `slots` slots unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as prefect_client:
        try:
            prefect_client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                prefect_client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots)
                )
            except ObjectAlreadyExists:  # another run created it a moment ago
                pass


@contextmanager
def bench_host_lock(timeout_s: float = 3600) -> Iterator[None]:
    """Hold this host's benchmark slot on the Prefect server for the block.

    Skipped on the CLI's temporary server: it serves one process, so the limit would guard
    nothing, and that server keeps leases in memory and runs no repossessor, so a slot held by
    a SIGKILLed run would stay taken in its database for good. The machine-wide file lock
    (onnxforge.benchmark.machine_lock_path) holds in every mode.
    """
    if os.environ.get(EMBEDDED_SERVER_ENV):
        yield
        return
    from prefect.concurrency.sync import concurrency

    name = bench_lock_name()
    ensure_limit(name)
    # strict: a limit that vanished must not turn the section into no lock at all
    with concurrency(
        name, occupy=1, strict=True, timeout_seconds=timeout_s, lease_duration=LEASE_S
    ):
        yield


def recipe_lock_name(recipe_path: str) -> str:
    """The limit that lets one deployment run of a recipe at a time go on."""
    return f"onnxforge-recipe-{Path(recipe_path).stem}"


@contextmanager
def one_run_per_recipe(recipe_path: str) -> Iterator[None]:
    """In a deployment run, hold the recipe's slot (one, created on first use) for the block.

    A second deployment run of the same recipe waits here until the first one ends. The slot is
    a global concurrency limit, not the deployment's own `concurrency_limit`: Prefect releases a
    deployment's slot when its run pauses, after which the paused run's process fails to renew
    the lease and is cancelled. This lease belongs to the process and is renewed while the run
    waits for approval; a killed holder's slot frees when the lease expires (RECIPE_LEASE_S,
    plus up to the server's repossessor loop, 15 s by default). Runs that are not deployment
    runs (the CLI, tests) take no slot.
    """
    from prefect.runtime import deployment, flow_run

    if deployment.id is None:
        yield
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.logging import get_run_logger

    name = recipe_lock_name(recipe_path)
    ensure_limit(name)
    with get_client(sync_client=True) as prefect_client:
        limit = prefect_client.read_global_concurrency_limit_by_name(name)
    if limit.active_slots >= limit.limit:
        get_run_logger().info(
            "another run of %s is going on: this run waits for it to end "
            "(global concurrency limit %s)",
            recipe_path,
            name,
        )
    with concurrency(
        name,
        occupy=1,
        strict=True,  # a limit that vanished must not turn into no limit at all
        lease_duration=RECIPE_LEASE_S,
        holder=ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id),
        # a renewal that fails (the server was away) logs a warning; the run goes on
        raise_on_lease_renewal_failure=False,
    ):
        yield
