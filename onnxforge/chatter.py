"""Third-party chatter routed to DEBUG logging, unless verbose.

TensorFlow, torch, ONNX Runtime and friends print warnings and start-up notes that bury the
pipeline's own log: torch's exporter warns four times per export that torchvision is absent,
TensorFlow logs its oneDNN notice when it loads (and AutoGraph warnings later), ONNX Runtime's
shape inference and fusion scripts log warnings about graphs. `route_third_party_output()` sends
all of that to the DEBUG level of the `onnxforge.third_party` logger; `ONNXFORGE_VERBOSE=1` (the
CLI's `--verbose`) leaves it as the libraries print it. Our own warnings and errors, and
third-party errors, always show.

Nothing here imports TensorFlow, torch or ONNX Runtime: their native logging is set through
environment variables, which the benchmark's worker processes inherit (TensorFlow's first notes,
written before it reads its variable, are caught on stderr around its import: see keras.py).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import FrameType
from typing import Any

VERBOSE_ENV = "ONNXFORGE_VERBOSE"
LOGGER = logging.getLogger("onnxforge.third_party")
OUR_PACKAGES = ("onnxforge", "flows", "tasks", "deployments", "benchmarks", "tests", "__main__")
# Packages whose log records below ERROR are chatter. Matched on the file that logged, since
# ONNX Runtime's transformer scripts log under bare module names (`fusion_attention`, `onnx_model`).
CHATTY_PACKAGES = (
    "absl",
    "h5py",
    "keras",
    "onnx",
    "onnx_ir",
    "onnxruntime",
    "onnxscript",
    "onnxsim",
    "tensorflow",
    "tf2onnx",
    "tf_keras",
    "torch",
    "torchvision",
    "transformers",
)
# Native loggers, read when the library loads. A value the user set is kept.
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ log: errors only
    "TORCH_LOGS": "-all",  # torch's registered loggers (own handlers, no propagation): errors only
    # MLflow's "Downloading artifacts: 100%" bar, drawn each time a champion is fetched
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# Lines TensorFlow's C++ side writes to stderr while it loads, before it reads TF_CPP_MIN_LOG_LEVEL.
NATIVE_NOTES = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "W0000 ")


def verbose() -> bool:
    """Whether third-party output is shown as the libraries print it (`ONNXFORGE_VERBOSE=1`)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def _package_of_file(path: str) -> str:
    parts = Path(path).parts
    if "site-packages" in parts or "dist-packages" in parts:
        index = max(i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages"))
        return parts[index + 1] if index + 1 < len(parts) else ""
    return ""


def is_chatter(record: logging.LogRecord) -> bool:
    """A record below ERROR logged by one of CHATTY_PACKAGES."""
    if record.levelno >= logging.ERROR:
        return False
    package = _package_of_file(record.pathname) or record.name.split(".")[0]
    return package in CHATTY_PACKAGES


class ChatterFilter(logging.Filter):
    """On a handler: passes chatter on to DEBUG of `onnxforge.third_party` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_chatter(record):
            return True
        LOGGER.debug("%s %s: %s", record.levelname, record.name, record.getMessage())
        return False


def _issuer(frame: FrameType | None) -> str:
    """The module that called warnings.warn: the first frame outside `warnings` and this file."""
    while frame is not None and frame.f_code.co_filename in (warnings.__file__, __file__):
        frame = frame.f_back
    return "" if frame is None else str(frame.f_globals.get("__name__", ""))


def _show_warning(
    message: Any, category: type[Warning], filename: str, lineno: int, *args: Any
) -> None:
    issuer = _issuer(sys._getframe(1))
    if issuer.split(".")[0] in OUR_PACKAGES:
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, *args)
        return
    LOGGER.debug("%s from %s (%s:%s): %s", category.__name__, issuer, filename, lineno, message)


_ORIGINAL_SHOWWARNING = warnings.showwarning
_FILTER = ChatterFilter()


def route_third_party_output(verbose_output: bool | None = None) -> None:
    """Route third-party warnings and log chatter to DEBUG (idempotent; call before heavy
    imports so the native loggers read the environment). `verbose_output` None reads
    ONNXFORGE_VERBOSE; True or False is written to it, for child processes."""
    if verbose_output is None:
        verbose_output = verbose()
    os.environ[VERBOSE_ENV] = "1" if verbose_output else "0"
    if verbose_output:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if warnings.showwarning is not _show_warning:
        warnings.showwarning = _show_warning
    # Records that reach the root logger's handlers, or the last-resort handler when there are
    # none (Prefect replaces the root handlers when it loads: the flow calls this again).
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    # TensorFlow adds its own handler to `tensorflow` when the root logger has none.
    for name in ("tensorflow", "absl"):
        if _FILTER not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_FILTER)


@contextmanager
def native_notes_to_debug() -> Iterator[None]:
    """Around a native library's load: the notes it writes to stderr (file descriptor 2) go to
    DEBUG, anything else is written back to stderr. Nothing is captured when verbose."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _replay(captured.read().decode(errors="replace"))


def _replay(text: str) -> None:
    for line in text.splitlines():
        if line.startswith(NATIVE_NOTES):
            LOGGER.debug("native: %s", line)
        else:
            sys.stderr.write(line + "\n")
    sys.stderr.flush()


@contextmanager
def prints_to_debug(source: str) -> Iterator[None]:
    """Around a library call that reports progress with `print` (onnxsim prints
    "Checking 0/3..." once per check run): those lines go to DEBUG unless verbose."""
    if verbose():
        yield
        return
    buffer = io.StringIO()
    try:
        with redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            LOGGER.debug("%s: %s", source, line)
