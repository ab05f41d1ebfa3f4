"""A PyTorch recipe's run never imports TensorFlow; a Keras recipe's never needs torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# The whole flow, run the way `onnxforge run` runs it, then a look at what got imported.
PROBE = """
import os, sys, tempfile
home = tempfile.mkdtemp()
os.environ.update(ONNXFORGE_HOME=home + "/state", PREFECT_HOME=home + "/prefect",
                  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                  PREFECT_SERVER_ANALYTICS_ENABLED="false")
os.makedirs(home + "/prefect")
os.environ.pop("PREFECT_API_URL", None); os.environ.pop("MLFLOW_TRACKING_URI", None)
from flows.cli import main
code = main(["run", sys.argv[1], "--set", "benchmark.iterations=5", "--set", "benchmark.warmup=1",
             "--set", "variants={simplified: {}, int8-dynamic: {}}"])
print("IMPORTED", code, sorted(m for m in ("tensorflow", "keras", "tf2onnx", "torch") if m in sys.modules))
"""


def _imported(recipe: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "configs" / recipe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED")]
    assert lines, result.stderr[-3000:]
    return lines[-1]


def test_a_pytorch_run_never_imports_tensorflow() -> None:
    assert _imported("digits_cnn.yaml") == "IMPORTED 0 ['torch']"
