"""Bring-your-own models through the whole flow: a PyTorch module by import path, a .keras file,
an ONNX file with external data. Training is skipped; parity is against the user's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE, REPO

pytestmark = pytest.mark.slow

QUICK = {
    "benchmark.warmup": "1",
    "benchmark.iterations": "5",
    "variants": "{simplified: {}, int8-dynamic: {}}",
}


def _recipe(folder: Path, base: Path, model: dict, **sections: dict) -> Path:
    data = yaml.safe_load(base.read_text())
    data["model"] = model
    data["train"] = {"enabled": False}
    data["register"]["model_name"] = "byo-model"
    for name, section in sections.items():
        data[name] = section
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _pytorch(folder: Path) -> Path:
    from tests.byo_fixtures import torch_module

    checkpoint = torch_module(folder)
    model = {
        "framework": "pytorch",
        "architecture": "byo_models:make_tiny",
        "kwargs": {"hidden": 32},
        "checkpoint": str(checkpoint),
    }
    return _recipe(folder, DEFAULT_RECIPE, model)


def _keras(folder: Path) -> Path:
    from tests.byo_fixtures import keras_file

    model = {"framework": "keras", "file": str(keras_file(folder))}
    return _recipe(folder, REPO / "configs" / "digits_keras.yaml", model)


def _onnx(folder: Path) -> Path:
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(folder, external_data=True)
    assert Path(f"{model_file}.data").is_file()
    export = {"opset": 18, "dynamic_axes": {0: "batch"}}
    return _recipe(
        folder, DEFAULT_RECIPE, {"framework": "onnx", "file": str(model_file)}, export=export
    )


KINDS = {
    "pytorch-import-path": (_pytorch, "torch.onnx.export", "pytorch-eager"),
    "keras-file": (_keras, "tf2onnx", "keras-tf-function"),
    "onnx-file": (_onnx, "user ONNX file", "onnx-original"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bring_your_own_model(
    prefect_harness: None,
    mlflow_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    import mlflow

    from flows.onnx_pipeline import onnx_pipeline

    make, producer, baseline = KINDS[kind]
    monkeypatch.chdir(tmp_path)  # the user's own module is importable from the working directory
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "byo_models")  # the operator's allow-list
    recipe = make(tmp_path)
    registration = onnx_pipeline(recipe_path=str(recipe), overrides=QUICK)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(
        client.get_model_version_by_alias("byo-model", "champion").tags["source_run_id"]
    )
    metrics = run.data.metrics
    assert "train.loss" not in metrics  # training skipped
    assert metrics["train.test_accuracy"] > 0.9
    assert metrics["parity.fp32.passed"] == 1 and metrics["parity.fp32.max_abs_err"] < 1e-4
    assert metrics[f"bench.{baseline}.framework.bs1.p50_ms"] > 0
    summary = Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text()
    assert producer in summary


def test_a_model_fed_only_by_a_synthetic_spec(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow

    from flows.onnx_pipeline import onnx_pipeline
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path, external_data=False)
    dataset = {
        "source": "synthetic",
        "samples": 200,
        "seed": 3,
        "inputs": [
            {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32", "low": 0, "high": 1}
        ],
    }
    recipe = _recipe(
        tmp_path,
        DEFAULT_RECIPE,
        {"framework": "onnx", "file": str(model_file)},
        dataset=dataset,
        export={"opset": 18, "dynamic_axes": {0: "batch"}},
    )
    registration = onnx_pipeline(recipe_path=str(recipe), overrides=QUICK)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    metrics = client.get_run(
        client.get_model_version("byo-model", "1").tags["source_run_id"]
    ).data.metrics
    assert metrics["parity.fp32.passed"] == 1 and "parity.fp32.top1_agreement" in metrics
    absent = [k for k in metrics if k.endswith("accuracy") and not k.startswith("bench.")]
    assert absent == [], "without labels, accuracy metrics are absent, not zero"


def test_a_two_input_model_trains_exports_and_registers(
    prefect_harness: None, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import onnx

    from flows.onnx_pipeline import onnx_pipeline
    from tests.byo_fixtures import two_input_data

    data = two_input_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "two_input")  # the operator's allow-list
    dataset = {
        "source": "npz",
        "path": str(data),
        "features": ["top", "bottom"],
        "labels": "label",
        "scale": 16.0,
    }
    recipe = _recipe(
        tmp_path,
        DEFAULT_RECIPE,
        {"framework": "pytorch", "architecture": "two_input:TwoInputNet"},
        dataset=dataset,
        train={"epochs": 15, "learning_rate": 0.01},
    )
    registration = onnx_pipeline(recipe_path=str(recipe), overrides=QUICK)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("byo-model", "1")
    metrics = client.get_run(version.tags["source_run_id"]).data.metrics
    assert metrics["train.test_accuracy"] > 0.9 and metrics["parity.fp32.passed"] == 1
    assert "parity.int8-dynamic.max_abs_err" in metrics  # both inputs fed through quantization too
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri="models:/byo-model/1", dst_path=str(tmp_path / "dl")
        )
    )
    graph = onnx.load(str(local / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["top", "bottom"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in graph.input)
    signature = (local / "MLmodel").read_text()
    assert '"name": "top"' in signature and '"name": "bottom"' in signature
