"""The whole flow under Prefect's test harness with a real MLflow SQLite store (no mocks)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE

pytestmark = pytest.mark.slow

QUICK = {"benchmark.warmup": "2", "benchmark.iterations": "10", "benchmark.rounds": "3"}
ALL_VARIANTS = {"fp32", "simplified", "ort-optimized", "int8-dynamic", "int8-static", "fp16"}
IMPOSSIBLE = {
    "parity.tolerances": "{"
    + ", ".join(
        f"{variant}: {{atol: 0.0, mean_atol: 0.0, min_top1_agreement: 1.0}}"
        for variant in sorted(ALL_VARIANTS)
    )
    + "}"
}


def _registered_sha256(uri: str) -> str:
    import mlflow

    from onnxforge.onnx_files import sha256_of

    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        return sha256_of(Path(local) / "model.onnx")


def test_pipeline_registers_then_refuses_an_impossible_tolerance(
    prefect_harness: None, mlflow_store: str
) -> None:
    import mlflow
    from prefect import get_client  # noqa: F401 - the harness serves the API
    from prefect.artifacts import Artifact

    from flows.onnx_pipeline import onnx_pipeline

    registration = onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides=QUICK)
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    assert registration.version == "1" and registration.champion_moved

    champion = client.get_model_version_by_alias("digits-cnn", "champion")
    challenger = client.get_model_version_by_alias("digits-cnn", "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.tags["variant"] == registration.variant
    assert champion.tags["sha256"] == _registered_sha256(f"models:/digits-cnn/{champion.version}")
    for tag in (
        "source_run_id",
        "flow_run_id",
        "code_commit",
        "dataset_hash",
        "parity.max_abs_err",
        "p50_ms.CPUExecutionProvider.bs1",
        "objective_value",
    ):
        assert champion.tags.get(tag), tag

    run = client.get_run(champion.tags["source_run_id"])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    assert metrics["train.test_accuracy"] >= 0.95
    for variant in ("fp32", "simplified", "int8-dynamic"):
        assert f"parity.{variant}.max_abs_err" in metrics
        assert metrics[f"bench.{variant}.cpu.bs1.p50_ms"] > 0
        assert (
            metrics[f"bench.{variant}.cpu.bs16.p99_ms"]
            >= metrics[f"bench.{variant}.cpu.bs16.p50_ms"]
        )
    assert metrics["bench.pytorch-eager.framework.bs1.p50_ms"] > 0
    assert len(client.get_metric_history(run.info.run_id, "train.loss")) == 15
    assert run.data.params["train.epochs"] == "15"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.md", "summary.json", "onnx"} <= artifacts
    onnx_files = {a.path for a in client.list_artifacts(run.info.run_id, "onnx")}
    assert onnx_files == {f"onnx/{variant}.onnx" for variant in ALL_VARIANTS}
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert {m.name for m in logged} == ALL_VARIANTS

    bench_files = {a.path for a in client.list_artifacts(run.info.run_id, "benchmark")}
    assert bench_files == {
        "benchmark/bench.csv",
        "benchmark/bench.json",
        "benchmark/latency_by_batch.png",
        "benchmark/accuracy_vs_latency.png",
    }
    assert metrics["bench.fp32.cpu.bs16.speedup"] > 0
    table = Artifact.get("onnxforge-benchmark")
    assert table is not None and "CUDAExecutionProvider" in table.data and "skipped" in table.data
    assert Artifact.get("onnxforge-benchmark-plots") is not None

    summary = Artifact.get("onnxforge-summary")
    assert summary is not None and "| int8-dynamic |" in summary.data
    assert Artifact.get("onnxforge-mlflow-run") is not None

    # atol 0 everywhere: only a variant that reproduces the source bit for bit can pass, and on
    # some builds one does (ort-optimized did). Whatever the build, each variant either failed
    # with a typed failure or matched exactly; and only a passing variant is ever registered.
    refused = onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides={**QUICK, **IMPOSSIBLE})
    second = client.search_runs(
        [run.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    exact = set()
    for variant in ALL_VARIANTS:
        passed = second.data.metrics[f"parity.{variant}.passed"]
        error = second.data.metrics.get(f"parity.{variant}.max_abs_err")
        assert passed == 0.0 or error == 0.0, (variant, error)
        if passed:
            exact.add(variant)
    if not exact:
        assert refused.version is None and "no variant passed parity" in refused.reason
        versions = client.search_model_versions("name='digits-cnn'")
        assert [str(v.version) for v in versions] == ["1"]
    else:
        assert refused.variant in exact
    assert str(client.get_model_version_by_alias("digits-cnn", "champion").version) in (
        "1",
        refused.version,
    )
