"""A manifest a client can use, and the session it describes: `pull` writes the profile, the
preprocessing and the class labels into a folder of the alias's own, `session_from` rebuilds the
measured session from it, and `mlflow models serve` answers the payload docs/deploying.md gives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxforge.onnx_files import sha256_of
from tests.integration.test_consumer import _write_onnx  # the same MatMul + Softmax file

CPU = "CPUExecutionProvider"


def _profile(**settings: Any) -> dict:
    """A `profile.cpu` tag's value as registration writes it (this interpreter's build)."""
    from onnxforge.profiles import RuntimeProfile, deployed_profile

    return deployed_profile(RuntimeProfile(name="tuned", **settings), CPU, 2, 1)


PROFILE = {
    "graph_optimization_level": "ORT_ENABLE_BASIC",
    "disabled_optimizers": ["SkipLayerNormFusion"],
    "session_config": {"session.set_denormal_as_zero": True},
    "execution_mode": "sequential",
}


def _register(uri: str, name: str, path: Path, tags: dict[str, str]) -> str:
    """Log the file as the pipeline does (onnxforge.registry's signature) and register it."""
    import mlflow
    import mlflow.onnx
    import onnx

    from onnxforge.records import ModelArtifact
    from onnxforge.registry import _signature
    from onnxforge.tracking import client, ensure_experiment

    artifact = ModelArtifact(
        path=str(path),
        sha256=sha256_of(path),
        variant="fp32",
        parent=None,
        producer="test",
        opset=17,
        size_bytes=path.stat().st_size,
    )
    signature, example = _signature([artifact], np.ones((2, 4), np.float32))
    client(uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(uri, "deploy-manifest-tests"))
    with mlflow.start_run():
        logged = mlflow.onnx.log_model(
            onnx.load(path),
            name="model",
            signature=signature,
            input_example=example,
            save_as_external_data=False,
            pip_requirements=["onnxruntime"],  # no inference of requirements: seconds saved
        )
    base = {"sha256": sha256_of(path), "variant": "fp32", "onnxforge.state": "done"}
    version = mlflow.register_model(f"models:/{logged.model_id}", name, tags={**base, **tags})
    return str(version.version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[dict]:
    """One store for the module: v1 as registered before profiles (no profile, preprocessing or
    class_labels tags), v2 with them; champion and champion-cpu on v2, legacy on v1."""
    import shutil

    import mlflow

    from onnxforge.aliases import MoveNote, move_alias
    from onnxforge.deploy_info import deployment_tags
    from onnxforge.recipe import SklearnDataset
    from onnxforge.tracking import client

    tmp = tmp_path_factory.mktemp("deploy-manifest")
    shutil.copy(mlflow_template, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("ONNXFORGE_HOME", str(tmp / "state"))
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        path = tmp / "tiny.onnx"
        _write_onnx(path, seed=0)
        name = "iris-tiny"
        old = _register(uri, name, path, {"provider": CPU})
        dataset = SklearnDataset(source="sklearn", name="iris", scale=8.0)
        tags = {
            "provider": CPU,
            "profile.cpu": json.dumps(_profile(**PROFILE), sort_keys=True),
            **deployment_tags(dataset, 3),
        }
        new = _register(uri, name, path, tags)
        mlflow_client = client(uri)
        for alias, version in (("champion", new), ("champion-cpu", new), ("legacy", old)):
            move_alias(mlflow_client, name, alias, version, MoveNote("test", "tester"))
        try:
            yield {"uri": uri, "name": name, "old": old, "new": new, "tmp": tmp}
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


# ---------------------------------------------------------------- the manifest


def test_pull_writes_profile_preprocessing_labels_and_alias_per_alias_folder(
    registry: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxforge.consumer import default_folder, pull

    uri, name = registry["uri"], registry["name"]
    monkeypatch.chdir(tmp_path)
    assert default_folder(name) == Path("pulled") / f"{name}@champion"
    assert default_folder(name, CPU) == Path("pulled") / f"{name}@champion-cpu"
    assert default_folder(f"{name}/3") == Path("pulled") / f"{name}@v3"

    # champion and champion-cpu pulled at the same time, as the example automation does
    manifests: dict[str, dict] = {}

    def one(ref: str) -> None:
        manifests[ref] = pull(uri, ref, None, None)

    threads = [threading.Thread(target=one, args=(f"{name}@{a}",)) for a in ("champion", "champion-cpu")]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folders = sorted(p.name for p in (tmp_path / "pulled").iterdir())
    assert folders == [f"{name}@champion", f"{name}@champion-cpu"]
    for alias in ("champion", "champion-cpu"):
        folder = tmp_path / "pulled" / f"{name}@{alias}"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest == manifests[f"{name}@{alias}"]
        assert manifest["alias"] == alias and manifest["version"] == registry["new"]
        assert manifest["profile"] == _profile(**PROFILE)
        assert manifest["profile"]["settings"]["session_config"] == {
            "session.set_denormal_as_zero": "1"
        }
        assert manifest["profile_note"].startswith(f"from v{registry['new']}'s `profile.cpu` tag")
        assert manifest["class_labels"] == ["setosa", "versicolor", "virginica"]
        assert manifest["preprocessing"]["inputs"] == [
            {
                "name": "x",  # the graph's single input, filled in
                "raw_dtype": "float64",
                "dtype": "float32",
                "divide_by": 8.0,
                "sample_shape": None,
            }
        ]
        assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 4], "elem_type": "float"}]
        assert sha256_of(folder / "model.onnx") == manifest["sha256"]  # the keys kept


def test_a_version_without_profile_says_so(registry: dict, tmp_path: Path) -> None:
    from onnxforge.consumer import pull

    manifest = pull(registry["uri"], f"{registry['name']}@legacy", tmp_path / "old", None)
    assert manifest["alias"] == "legacy" and manifest["version"] == registry["old"]
    assert manifest["profile"] is None
    assert manifest["profile_note"].startswith(
        f"none: v{registry['old']} has no `profile.cpu` tag for {CPU} (it was registered before "
        "runtime profiles were recorded)"
    )
    assert manifest["preprocessing"] is None and manifest["class_labels"] is None
    # a provider the version was not chosen for has no profile either, and the note says which
    other = pull(registry["uri"], f"{registry['name']}@champion", tmp_path / "cuda", "CUDAExecutionProvider")  # fmt: skip
    assert other["profile"] is None
    assert "no `profile.cuda` tag" in other["profile_note"]
    assert "it has profiles only for profile.cpu" in other["profile_note"]


def test_cli_pull_without_to_uses_the_alias_folder(
    registry: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    assert main(["pull", registry["name"], "--provider", CPU]) == 0
    out = capsys.readouterr().out
    expected = Path("pulled") / f"{registry['name']}@champion-cpu" / "model.onnx"
    assert out.rstrip().endswith(f"verified -> {expected}")
    assert (tmp_path / expected).is_file()


def test_the_example_automation_pulls_each_alias_into_its_own_folder(registry: dict) -> None:
    from deployments.pull_champion import pull_champion

    name = registry["name"]
    threads = [
        threading.Thread(target=pull_champion.fn, args=(name, alias))
        for alias in ("champion", "champion-cpu")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deployed = registry["tmp"] / "state" / "deployed"
    assert sorted(p.name for p in deployed.iterdir()) == [
        f"{name}@champion",
        f"{name}@champion-cpu",
    ]
    for folder in deployed.iterdir():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert folder.name == f"{name}@{manifest['alias']}"


# ---------------------------------------------------------------- session_from


@pytest.fixture
def pulled(registry: dict, tmp_path: Path) -> Path:
    from onnxforge.consumer import pull

    folder = tmp_path / "model"
    pull(registry["uri"], f"{registry['name']}@champion", folder, None)
    return folder


def _rewrite(folder: Path, change: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_session_from_builds_the_measured_session(pulled: Path) -> None:
    import onnxruntime as ort

    from onnxforge.runtime import session_from

    session = session_from(pulled)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert session.get_providers()[0] == CPU
    probs = session.run(None, {"x": np.ones((2, 4), np.float32)})[0]
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert session_from(pulled, CPU).get_providers()[0] == CPU
    with pytest.raises(ValueError, match="measured on CPUExecutionProvider, not CUDA"):
        session_from(pulled, "CUDAExecutionProvider")


def test_session_from_refuses_a_changed_file(pulled: Path) -> None:
    from onnxforge.errors import Sha256Mismatch
    from onnxforge.runtime import session_from

    data = bytearray((pulled / "model.onnx").read_bytes())
    data[-5] ^= 0x01
    (pulled / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(Sha256Mismatch, match=f"{pulled / 'model.onnx'}: sha256 mismatch"):
        session_from(pulled)


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("onnxruntime", "1.20.0", "onnxruntime 1.20.0 (the pipeline interpreter)"),
        ("distribution", "onnxruntime-openvino", "onnxruntime-openvino "),
        ("python", "/opt/openvino/bin/python", "(/opt/openvino/bin/python)"),
    ],
)
def test_session_from_refuses_another_runtime_build(
    pulled: Path, field: str, value: str, shown: str
) -> None:
    import sys

    import onnxruntime as ort

    from onnxforge.runtime import RuntimeMismatch, session_from

    _rewrite(pulled, lambda m: m["profile"]["runtime"].update({field: value}))
    with pytest.raises(RuntimeMismatch) as refused:
        session_from(pulled)
    message = str(refused.value)
    assert message.startswith(f"{pulled}: profile 'tuned' was measured on ")
    assert shown in message
    assert f"this interpreter has onnxruntime {ort.__version__} ({sys.executable})" in message
    assert "allow_other_runtime=True" in message
    built = session_from(pulled, allow_other_runtime=True)
    assert built.get_session_options().intra_op_num_threads == 2


def test_session_from_without_a_profile_is_the_default_cpu_session(pulled: Path) -> None:
    import onnxruntime as ort

    from onnxforge.runtime import session_from

    _rewrite(pulled, lambda m: m.update(profile=None))
    session = session_from(pulled)
    options = session.get_session_options()
    default = ort.SessionOptions()
    assert session.get_providers()[0] == CPU
    assert options.intra_op_num_threads == default.intra_op_num_threads
    assert options.graph_optimization_level == default.graph_optimization_level


def test_session_from_names_what_is_missing(tmp_path: Path) -> None:
    from onnxforge.runtime import session_from

    with pytest.raises(FileNotFoundError, match="no manifest.json; expected a folder written by"):
        session_from(tmp_path)


# ---------------------------------------------------------------- mlflow models serve


def test_mlflow_serving_payload_for_a_registered_version(registry: dict, pulled: Path) -> None:
    """What `mlflow models serve -m models:/NAME@champion` does with a JSON body, without the
    server process: scoring_server.invocations is the function its /invocations route calls."""
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import invocations

    from onnxforge.runtime import session_from

    model = mlflow.pyfunc.load_model(f"models:/{registry['name']}@champion")
    schema = model.metadata.get_input_schema()
    rows = (np.arange(8, dtype=np.float32).reshape(2, 4) / 8).tolist()
    expected = session_from(pulled).run(None, {"x": np.asarray(rows, np.float32)})[0]

    # docs/deploying.md's payload: the batch as one nested list under "inputs"
    answer = invocations(json.dumps({"inputs": rows}), "application/json", model, schema)
    assert answer.status == 200, answer.response
    assert np.allclose(json.loads(answer.response)["predictions"]["probs"], expected)
    answer = invocations(json.dumps({"instances": rows}), "application/json", model, schema)
    assert answer.status == 200, answer.response

    # the input name from the manifest: onnxforge.registry names even a single input, since
    # an un-named signature makes the server answer this with HTTP 400
    assert schema.has_input_names()
    named = json.dumps({"inputs": {"x": rows}})
    answer = invocations(named, "application/json", model, schema)
    assert answer.status == 200, answer.response
