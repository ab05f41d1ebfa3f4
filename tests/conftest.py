"""Shared fixtures: a real Prefect test harness and a real MLflow SQLite store per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "configs" / "digits_cnn.yaml"

# Few variants, one provider and batch size, short rounds: for whole-flow tests of what happens
# around the measurements (promotion, resume, outcome), not of the measurements themselves.
FAST = {
    "train.epochs": "8",
    "variants": "{simplified: {}, int8-dynamic: {}}",
    "benchmark.providers": "[CPUExecutionProvider]",
    "benchmark.batch_sizes": "[1]",
    "benchmark.warmup": "2",
    "benchmark.iterations": "10",
    "benchmark.rounds": "3",
    "benchmark.baseline": "false",
}


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server for the session, its home in a temp folder."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store, made once (migrations take seconds) and copied per test."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's own MLflow store and onnxforge state folder; returns the tracking URI."""
    database = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, database)
    uri = f"sqlite:///{database}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "state"))
    return uri


@pytest.fixture(scope="session")
def digits_recipe():
    """The shipped default recipe, loaded."""
    from onnxforge.recipe import load_recipe

    return load_recipe(DEFAULT_RECIPE)


def data_of(recipe):
    """The recipe's splits as a pipeline run makes them (one .npz with its sha256, in a folder of
    its own): every core stage reads its samples from such a record, never from the recipe."""
    import tempfile

    from onnxforge.pipeline import prepare_data

    return prepare_data(recipe, Path(tempfile.mkdtemp(prefix="onnxforge-test-data-")))
