"""Machine-wide file locks (fcntl): released by the kernel when the holding process dies, even
by SIGKILL, so a killed run never leaves a lock taken."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(name: str) -> Path:
    """The lock file for `name` in the system temp folder (shared by every ONNXFORGE_HOME)."""
    return Path(tempfile.gettempdir()) / f"onnxforge-{name}.lock"


def _open_shared(path: Path) -> int:
    """Open (creating) a lock file every local user can lock: mode 0666, whatever the umask."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)
    except PermissionError:  # another user created it; they already made it shared
        pass
    return fd


@contextmanager
def machine_lock(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; wait at most `timeout_s` (None: forever),
    then raise TimeoutError naming the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_shared(path)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"lock {path} still held by another process after {timeout_s:.0f} s"
                        ) from None
                    time.sleep(0.5)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
