"""The CLI's temporary Prefect server, started so that it dies with the CLI.

With no PREFECT_API_URL, Prefect 3.9 starts a temporary server itself
(prefect.server.api.server.SubprocessASGIServer: `python -m uvicorn --factory
prefect.server.api.server:create_app` as a plain child, stopped by an atexit handler). A CLI
killed with SIGKILL runs no atexit handler, so that server outlived it. The CLI starts the same
server itself instead, through onnxforge.procs (the kernel kills it when the CLI dies), and
points PREFECT_API_URL at it. This is simpler than a watchdog process that tracks and kills
descendants: the CLI's other children (benchmark workers) are tied to it the same way.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
from pathlib import Path

from onnxforge.procs import EMBEDDED_SERVER_ENV, TiedServer

STARTUP_TIMEOUT_S = 120  # a fresh home runs database migrations first: ~16 s on 2 cores
EXIT_SERVER_LOST = 1
SERVER_LOG = "server.log"  # in PREFECT_HOME: the embedded server's stdout and stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_embedded_server() -> TiedServer:
    """Start Prefect's server (no UI) on a free local port, wait until it answers, and point
    this process's PREFECT_API_URL at it. Call before Prefect is imported: Prefect reads its
    settings from the environment at import."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    # The variables Prefect's own temporary server gets: no UI, ephemeral-mode services only.
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    home = Path(env["PREFECT_HOME"]) if env.get("PREFECT_HOME") else Path.home() / ".prefect"
    _private_database(home)
    # The server's own output goes to its log, not to the run's console: a server that fails
    # (a full disk, a locked database) printed hundreds of traceback lines between the run's.
    health = f"http://127.0.0.1:{port}/api/health"
    server = TiedServer(command, health, env, umask=0o077, log=home / SERVER_LOG)
    atexit.register(server.stop)  # registered before Prefect's handlers, so it runs after them
    server.wait_healthy(STARTUP_TIMEOUT_S)
    server.watch(lambda code: _server_lost(server, code))
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    os.environ[EMBEDDED_SERVER_ENV] = "1"
    return server


def _private_database(home: Path) -> None:
    """A prefect.db an earlier version left readable by others becomes 0600 (new ones are created
    0600: the server runs with umask 077)."""
    database = home / "prefect.db"
    if database.is_file() and database.stat().st_mode & 0o077:
        database.chmod(0o600)


def _server_lost(server: TiedServer, returncode: int) -> None:
    """The server died under the run: say so in one line, end this process's MLflow runs FAILED
    and exit, instead of letting every Prefect call retry against a closed port for minutes.
    Children (benchmark workers) die with this process."""
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
    reason = f"the embedded Prefect server (pid {server.process.pid}) {how} mid-run"
    reason += f" (its log: {server.log})"
    ended = "MLflow run not ended"
    try:
        from onnxforge.run_lifecycle import end_own_runs
        from onnxforge.tracking import resolve_tracking_uri

        ended_ids = end_own_runs(resolve_tracking_uri(), "FAILED", reason)
        ended = f"MLflow run {', '.join(ended_ids)} ended FAILED" if ended_ids else "no MLflow run"
    except Exception as error:  # the line below must still be printed, and the process end
        ended = f"MLflow run not ended: {type(error).__name__}: {str(error)[:200]}"
    print(f"error: {reason}; the run stops ({ended})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_SERVER_LOST)
