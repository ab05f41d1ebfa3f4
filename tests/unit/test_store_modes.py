"""The embedded MLflow store is created private (0600), and the registry commands never create a
store: without one they say so in one line and exit 2."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def test_the_embedded_mlflow_store_is_created_0600(tmp_path: Path, monkeypatch) -> None:
    from onnxforge.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "state"))
    permissive = os.umask(0)  # the mode is set at creation, not left to the umask
    try:
        uri = resolve_tracking_uri()
    finally:
        os.umask(permissive)
    assert uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert stat.S_IMODE((tmp_path / "state" / "mlflow.db").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "argv",
    [
        ["pull", "digits-cnn", "--to", "out"],
        ["verify", "digits-cnn"],
        ["promote", "digits-cnn", "1", "--reason", "r"],
        ["rollback", "digits-cnn"],
    ],
)
def test_registry_commands_without_a_store_create_none(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from flows.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    store = tmp_path / "state" / "mlflow.db"
    assert captured.out == ""
    assert captured.err == (
        f"error: no MLflow store at {store} (from ONNXFORGE_HOME ({tmp_path / 'state'})): "
        "nothing was ever tracked there; set MLFLOW_TRACKING_URI to the store or server that "
        "holds the model\n"
    )
    assert list(tmp_path.iterdir()) == []
