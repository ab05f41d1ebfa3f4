"""The recipe's data file removed after the run's preflight found it: one line naming the field
and the file, exit 2, and no traceback on the console (Prefect logs a failed task's RecipeError
without its traceback there)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE, REPO

pytestmark = pytest.mark.slow


def test_a_data_file_removed_after_the_preflight_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((200, 1, 8, 8), dtype=np.float32), y=np.arange(200) % 10)
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe["dataset"] = {"source": "npz", "path": str(data), "sample_shape": [1, 8, 8]}
    recipe_path = tmp_path / "npz.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        ONNXFORGE_HOME=str(tmp_path / "state"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        ONNXFORGE_MLFLOW_RETRY_DELAYS="0",  # one retry, at once: the file stays gone
    )
    log_path = tmp_path / "cli.log"
    with log_path.open("w") as log:
        cli = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(recipe_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:  # open-mlflow-run comes next; it migrates a fresh MLflow store first (seconds)
        while "is valid" not in log_path.read_text():
            assert cli.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.05)
        data.unlink()
        assert cli.wait(timeout=300) == 2
    finally:
        if cli.poll() is None:
            cli.kill()
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    last = output.splitlines()[-1]
    assert last.startswith("error: dataset.path: ") and str(data) in last, output[-3000:]
