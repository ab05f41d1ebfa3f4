"""An opset-9 ONNX CNN (TorchScript exporter, as old model-zoo files are) through the whole flow
with int8-static per-channel: the variant is built valid (upgraded to opset 13) or recorded as
build_failed; a file that fails to load is never reported as built or logged as a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE

pytestmark = pytest.mark.slow

QUICK = {
    "benchmark.warmup": "1",
    "benchmark.iterations": "5",
    "benchmark.rounds": "3",
    "benchmark.batch_sizes": "[1]",
    "benchmark.baseline": "false",
    "variants": "{simplified: {}, int8-static: {per_channel: true}}",
}


def _opset9_cnn(folder: Path) -> Path:
    """A small CNN fitted on digits, exported at opset 9 with a symbolic batch."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(512, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    path = folder / "old.onnx"
    torch.onnx.export(
        model.eval(),
        (torch.zeros(4, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=9,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def test_an_opset9_model_through_int8_static_per_channel(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow
    import onnx
    import onnxruntime as ort

    from flows.onnx_pipeline import onnx_pipeline

    model_file = _opset9_cnn(tmp_path)
    assert onnx.load(str(model_file)).opset_import[0].version == 9
    data = yaml.safe_load(DEFAULT_RECIPE.read_text())
    data["model"] = {"framework": "onnx", "file": str(model_file)}
    data["train"] = {"enabled": False}
    data["export"] = {"opset": 18, "dynamic_axes": {0: "batch"}}
    data["register"]["model_name"] = "old-opset"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))

    registration = onnx_pipeline(recipe_path=str(recipe), overrides=QUICK)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run_id = client.get_model_version("old-opset", "1").tags["source_run_id"]
    run = client.get_run(run_id)
    summary = json.loads(Path(client.download_artifacts(run_id, "summary.json")).read_text())
    builds = {b["variant"]: b for b in summary["builds"]}
    static = builds["int8-static"]
    logged = {
        m.name
        for m in mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], output_format="list"
        )
    }
    onnx_files = {a.path for a in client.list_artifacts(run_id, "onnx")}
    if static["status"] == "build_failed":
        assert static["artifact"] is None and static["reason"]
        assert "int8-static" not in logged and "onnx/int8-static.onnx" not in onnx_files
        return
    artifact = static["artifact"]
    assert artifact["opset"] >= 13 and "opset 9 upgraded to 13" in artifact["notes"][0]
    assert "inference on 2 samples" in artifact["checks"]
    ort.InferenceSession(artifact["path"], providers=["CPUExecutionProvider"])  # it loads
    assert "parity.int8-static.max_abs_err" in run.data.metrics  # parity ran on it
    assert "int8-static" in logged and "onnx/int8-static.onnx" in onnx_files
