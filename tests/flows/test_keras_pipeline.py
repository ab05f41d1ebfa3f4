"""Keras Sequential and Functional models through the whole flow (real Prefect harness + MLflow)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

KERAS_RECIPE = REPO / "configs" / "digits_keras.yaml"
QUICK = {
    "benchmark.warmup": "2",
    "benchmark.iterations": "10",
    "variants": "{simplified: {}, int8-dynamic: {}}",
}


@pytest.mark.parametrize("architecture", ["keras_cnn", "keras_cnn_functional"])
def test_keras_model_is_converted_validated_and_registered(
    prefect_harness: None, mlflow_store: str, architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from flows.onnx_pipeline import onnx_pipeline

    # choosing the architecture is the operator's opt-in for overrides (a trusted test)
    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")

    registration = onnx_pipeline(
        recipe_path=str(KERAS_RECIPE), overrides={**QUICK, "model.architecture": architecture}
    )
    assert registration.version == "1", registration.reason
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version_by_alias("digits-keras", "champion")
    assert version.tags["producer"].startswith(
        ("tf2onnx.convert.from_function", "onnxsim", "onnxruntime")
    )
    run = client.get_run(version.tags["source_run_id"])
    metrics = run.data.metrics
    assert metrics["train.test_accuracy"] >= 0.95
    assert metrics["parity.fp32.max_abs_err"] < 1e-4  # against the Keras model's own predictions
    assert metrics["bench.keras-tf-function.framework.bs1.p50_ms"] > 0
    assert metrics["bench.fp32.cpu.bs16.speedup"] > 0
    summary = client.download_artifacts(run.info.run_id, "summary.json")
    assert "tf2onnx.convert.from_function" in open(summary).read()
