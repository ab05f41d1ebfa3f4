"""A `transformers` BERT built from a small config (random init) through the whole flow: trained,
exported with eager attention, fused from the raw export (ort-optimized holds an attention
fusion), quantized from the fused graph, and registered."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
pytest.importorskip("transformers", reason="the `transformers` extra (make install installs it)")

RECIPE = REPO / "configs" / "hf_bert.yaml"
QUICK = {
    "dataset.samples": "1200",
    "train.epochs": "4",
    "variants": (
        "{simplified: {}, ort-optimized: {num_heads: 4, hidden_size: 64}, "
        "int8-dynamic: {per_channel: true, source: ort-optimized}}"
    ),
    "benchmark.batch_sizes": "[1]",
    "register.objective.batch_size": "1",
    "benchmark.warmup": "2",
    "benchmark.iterations": "10",
    "benchmark.rounds": "3",
}
ATTENTION = {"Attention", "MultiHeadAttention"}


def _op_types(model_uri: str) -> set[str]:
    import mlflow
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
        return {node.op_type for node in onnx.load(str(Path(local) / "model.onnx")).graph.node}


def test_a_transformers_bert_runs_end_to_end_with_attention_fused(
    prefect_harness: None, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    # QUICK measures batch 1 only, so the objective moves there: a bar change, opted into.
    monkeypatch.setenv("ONNXFORGE_TRUSTED_BAR", "1")
    from flows.onnx_pipeline import onnx_pipeline

    registration = onnx_pipeline(recipe_path=str(RECIPE), overrides=QUICK)
    assert registration.version == "1", registration.reason

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("hf-bert", "1")
    run = client.get_run(version.tags["source_run_id"])
    assert run.data.metrics["train.test_accuracy"] > 0.5  # 4 classes: chance is 0.25
    logged = {
        m.name: m
        for m in mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], output_format="list"
        )
    }
    assert {"fp32", "simplified", "ort-optimized", "int8-dynamic"} <= set(logged)

    fused = _op_types(logged["ort-optimized"].model_uri)
    assert fused & ATTENTION, f"no attention fusion in ort-optimized: {sorted(fused)}"
    assert "SkipLayerNormalization" in fused
    assert "Softmax" not in fused, "an unfused attention left its Softmax behind"
    assert "Attention x" in logged["ort-optimized"].tags["producer"]  # the fusions it records

    # quantized from the fused graph: the attention fusion survives, the MatMuls are int8
    quantized = _op_types(logged["int8-dynamic"].model_uri)
    assert quantized & ATTENTION and "MatMulInteger" in quantized
    assert logged["int8-dynamic"].tags["parent"] == "ort-optimized"
