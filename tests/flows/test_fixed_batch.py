"""An ONNX file with its batch fixed at 1 (opset 13), brought as it is, runs end to end and is
registered: parity one sample at a time, benchmarks at batch 1 only, other batch sizes
`unsupported` with the reason, the file's own opset logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE

pytestmark = pytest.mark.slow

OVERRIDES = {
    "variants": "{simplified: {}, int8-dynamic: {}}",
    "benchmark.providers": "[CPUExecutionProvider]",
    "benchmark.batch_sizes": "[1, 4]",
    "benchmark.warmup": "1",
    "benchmark.iterations": "5",
    "benchmark.rounds": "2",
    "benchmark.baseline": "true",
}


def _recipe(folder: Path, model_file: Path) -> Path:
    data = yaml.safe_load(DEFAULT_RECIPE.read_text())
    data["model"] = {"framework": "onnx", "file": str(model_file)}
    data["train"] = {"enabled": False}
    data.pop("export")  # the default export.opset (18) is not the file's (13)
    data["register"]["model_name"] = "fixed-batch-cnn"
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_fixed_batch_onnx_file_runs_end_to_end_and_is_registered(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow
    import onnx

    from flows.onnx_pipeline import onnx_pipeline
    from tests.fixed_batch_fixtures import fixed_batch_cnn

    model_file = fixed_batch_cnn(tmp_path)
    registration = onnx_pipeline(
        recipe_path=str(_recipe(tmp_path, model_file)), overrides=OVERRIDES
    )
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("fixed-batch-cnn", "1")
    run = client.get_run(version.tags["source_run_id"])
    assert run.data.params["export.opset"] == "13"  # the file's opset, not the recipe default
    metrics = run.data.metrics
    assert metrics["parity.fp32.passed"] == 1 and metrics["train.test_accuracy"] > 0.9
    assert metrics["parity.int8-dynamic.passed"] == 1  # variants keep the fixed batch and pass

    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "benchmark/bench.json")).read_text()
    )
    at_one = [row for row in table if row["batch_size"] == 1]
    at_four = [row for row in table if row["batch_size"] == 4]
    assert {row["variant"] for row in at_one} >= {
        "fp32",
        "simplified",
        "int8-dynamic",
        "onnx-original",
    }
    assert all(row["status"] == "ok" for row in at_one), at_one
    assert at_four and all(row["status"] == "unsupported" for row in at_four), at_four
    assert all("fix the batch at 1" in row["reason"] for row in at_four), at_four

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri="models:/fixed-batch-cnn/1", dst_path=str(tmp_path / "dl")
        )
    )
    dims = onnx.load(str(local / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1  # the registered variant keeps the batch the file declares


def test_make_batch_dynamic_rewrites_the_file_and_every_batch_size_is_measured(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow
    import onnx

    from flows.onnx_pipeline import onnx_pipeline
    from tests.fixed_batch_fixtures import fixed_batch_cnn

    recipe = _recipe(tmp_path, fixed_batch_cnn(tmp_path))
    overrides = {**OVERRIDES, "export.make_batch_dynamic": "true"}
    registration = onnx_pipeline(recipe_path=str(recipe), overrides=overrides)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(client.get_model_version("fixed-batch-cnn", "1").tags["source_run_id"])
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, "benchmark/bench.json")).read_text()
    )
    variants = {row["variant"] for row in table if row["source"] == "run"}
    assert variants >= {"fp32", "simplified", "int8-dynamic"}
    # the rewritten variants run at batch 4; the user's file (the baseline) still takes only 1
    assert all(r["status"] == "ok" for r in table if r["variant"] in variants), table
    baseline_at_four = [
        r for r in table if r["variant"] == "onnx-original" and r["batch_size"] == 4
    ]
    assert [r["status"] for r in baseline_at_four] == ["unsupported"]
    assert run.data.metrics["parity.fp32.passed"] == 1
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri="models:/fixed-batch-cnn/1", dst_path=str(tmp_path / "dl")
        )
    )
    dims = onnx.load(str(local / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
