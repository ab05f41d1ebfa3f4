"""Child processes that die with their parent, even when the parent is killed with SIGKILL.

`python -m onnxforge.procs PARENT_PID -- COMMAND...` asks Linux to send SIGKILL to this process
when its parent dies (prctl PR_SET_PDEATHSIG), checks that the parent is still PARENT_PID (it may
have died before the request was made), then execs COMMAND in place: the setting survives execve,
so COMMAND itself dies with the parent. The request is made in the child after fork, not in a
`preexec_fn`, which Python documents as unsafe in a process with threads (Prefect runs tasks on
threads). Linux sends the signal when the *thread* that started the child ends, so start long-lived
children from a thread that outlives them (the CLI's main thread, or the task that waits on them).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Set by the CLI when it runs its own temporary Prefect server (no UI, gone after the run).
EMBEDDED_SERVER_ENV = "ONNXFORGE_EMBEDDED_PREFECT"


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected_parent:  # the parent died before the request took effect
        os._exit(1)


def watch_parent(expected_parent: int, interval_s: float = 1.0) -> threading.Thread:
    """A daemon thread that ends this process when its parent changes (the portable fallback)."""

    def watch() -> None:
        while os.getppid() == expected_parent:
            time.sleep(interval_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="onnxforge-parent-watch", daemon=True)
    thread.start()
    return thread


def tied_command(command: list[str] | tuple[str, ...]) -> list[str]:
    """`command`, wrapped so that the process it starts dies with this one."""
    return [sys.executable, "-m", "onnxforge.procs", str(os.getpid()), "--", *command]


class TiedServer:
    """A local server process that dies with this one; stopped gracefully on a normal exit.

    It runs in a session (and process group) of its own: a signal sent to this process's group,
    as a terminal sends Ctrl-C or a supervisor sends SIGTERM, reaches this process only, which
    ends its work while the server still answers; the server then dies with it.
    """

    def __init__(
        self,
        command: list[str],
        health_url: str,
        env: dict[str, str],
        umask: int = -1,
        log: Path | None = None,
    ) -> None:
        import subprocess

        self.health_url = health_url
        self.stopping = False
        self.log = log
        output = None
        if log is not None:  # the server's own output (tracebacks included) goes to its log
            log.parent.mkdir(parents=True, exist_ok=True)
            output = log.open("ab")
        self.process = subprocess.Popen(
            tied_command(command),
            env=env,
            start_new_session=True,
            umask=umask,
            stdout=output,
            stderr=output,
        )
        if output is not None:
            output.close()  # the child holds its own copy

    def watch(self, on_exit: Callable[[int], None], interval_s: float = 0.5) -> threading.Thread:
        """A daemon thread that calls `on_exit(returncode)` if the server exits before `stop`."""

        def wait() -> None:
            while self.process.poll() is None:
                time.sleep(interval_s)
            if not self.stopping:
                on_exit(self.process.returncode)

        thread = threading.Thread(target=wait, name="onnxforge-server-watch", daemon=True)
        thread.start()
        return thread

    def wait_healthy(self, timeout_s: float) -> None:
        """Return once `health_url` answers 200; RuntimeError if the process exits or time runs out."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"local server exited {self.process.returncode} while starting"
                    + (f"; its log: {self.log}" if self.log else "")
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"local server did not answer {self.health_url} in {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (idempotent)."""
        import subprocess

        self.stopping = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def main(argv: list[str]) -> None:
    """PARENT_PID -- COMMAND...: die with PARENT_PID, then become COMMAND."""
    parent, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m onnxforge.procs PARENT_PID -- COMMAND...")
    die_with_parent(int(parent))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
