"""Prefect global concurrency limits that onnxforge creates on first use."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from onnxforge.procs import EMBEDDED_SERVER_ENV

# A slot whose holder was killed with SIGKILL is freed when its lease expires (the server's
# repossessor service); leases are renewed while the holder lives.
LEASE_S = 120


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
