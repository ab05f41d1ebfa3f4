"""`onnxforge promote` refuses a version below a quality floor unless --force; a forced move is
recorded as forced, with the floors and the reason, in the alias history and on the version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_consumer import _register, _unique, server  # noqa: F401 (fixture)
from tests.servers import MlflowServer

BELOW = "test accuracy 0.094 < register.min_accuracy 0.8"


def test_a_version_below_a_floor_moves_only_with_force(
    server: MlflowServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main
    from onnxforge.aliases import alias_history, current_version
    from onnxforge.tracking import client

    name = _unique("force")
    good = _register(server.uri, name, 31, tmp_path, floors="passed")
    bad = _register(server.uri, name, 32, tmp_path, floors=BELOW)
    mlflow_client = client(server.uri)
    assert main(["promote", name, good, "--reason", "first deploy"]) == 0
    capsys.readouterr()

    assert main(["promote", name, bad, "--reason", "try it"]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"error: refusing to move champion to {name} v{bad}: below a quality floor ({BELOW}); "
        "to move it anyway pass --force, with --reason saying why\n"
    )
    assert str(current_version(mlflow_client, name, "champion").version) == good

    assert main(["promote", name, bad, "--reason", "hotfix for the demo", "--force"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{name}@champion: v{good} -> v{bad} (forced past the quality floors: {BELOW})"
    )
    assert str(current_version(mlflow_client, name, "champion").version) == bad
    recorded = f"forced past the quality floors ({BELOW}): hotfix for the demo"
    assert alias_history(mlflow_client, name, "champion")[-1]["reason"] == recorded
    promotion = mlflow_client.get_model_version(name, bad).tags["promotion"]
    assert promotion.endswith(f"champion moved by hand by tester: {recorded}")
