"""What a deployer gets from the registry: the measured runtime profile on the version, a
manifest a client can use, a session built exactly that way, and no twin version for a rerun
on an unchanged model. The whole flow under Prefect's test harness, a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST
from tests.recipe_files import write_recipe

pytestmark = pytest.mark.slow


def test_the_registered_profile_is_what_session_from_builds_and_a_rerun_reconfirms(
    prefect_harness: None, mlflow_store: str, tmp_path: Path
) -> None:
    import mlflow
    import onnxruntime

    from flows.onnx_pipeline import onnx_pipeline
    from onnxforge.consumer import pull
    from onnxforge.runtime import session_from

    # The smallest passing file wins: a choice noise cannot change between the two runs.
    change = {"register.objective": {"metric": "size_bytes"}, "edge": {"memory_budget_mb": 512}}
    recipe = str(write_recipe(tmp_path, change))
    first = onnx_pipeline(recipe_path=recipe, overrides=FAST)
    assert first.version == "1" and first.champion_moved, first.reason
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("digits-cnn", "1")
    edge = client.get_model_version_by_alias("digits-cnn", "champion-edge")
    decision = next(d for d in first.decisions if d.alias == "champion-edge")
    assert decision.move and decision.reason.startswith("no edge champion yet; fastest")
    assert (
        edge.tags["edge.parity"] == "passed"
        and float(edge.tags["edge.peak_rss_increase_mb"]) <= 512
    )
    run_id = edge.tags["edge.run_id"]  # the run whose artifacts hold edge/<variant>/
    files = {a.path for a in client.list_artifacts(run_id, f"edge/{edge.tags['variant']}")}
    ort = next(f for f in files if f.endswith(".ort"))
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=ort, dst_path=str(tmp_path)
    )
    from onnxforge.onnx_files import sha256_of

    assert sha256_of(local) == edge.tags["edge.ort_sha256"]  # logged with its sha256
    assert any(f.endswith("required_operators.config") for f in files)
    stored = json.loads(version.tags["profile.cpu"])
    assert stored["name"] == "default" and stored["provider"] == "CPUExecutionProvider"
    assert stored["runtime"]["onnxruntime"] == onnxruntime.__version__
    assert json.loads(version.tags["class_labels"]) == [str(i) for i in range(10)]

    folder = tmp_path / "pulled"
    manifest = pull(mlflow_store, "digits-cnn@champion", folder)
    assert manifest["alias"] == "champion" and manifest["profile"] == stored
    (prep,) = manifest["preprocessing"]["inputs"]
    assert prep["divide_by"] == 16.0 and prep["sample_shape"] == [1, 8, 8]
    session = session_from(folder)
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert session.get_session_options().intra_op_num_threads == (stored["intra_op_threads"] or 0)
    from sklearn.datasets import load_digits

    raw = load_digits().data[:32]
    x = (raw.astype(prep["dtype"]) / np.float32(prep["divide_by"])).reshape(-1, 1, 8, 8)
    scores = session.run(None, {session.get_inputs()[0].name: x})[0]
    accuracy = float((scores.argmax(axis=1) == load_digits().target[:32]).mean())
    assert accuracy > 0.8  # the pulled model, fed as the manifest says, still reads digits

    # The same recipe again: training, export and variants come from the cache, so the
    # smallest file is the same file, with the same profile: re-confirmed, not registered twice.
    second = onnx_pipeline(recipe_path=recipe, overrides=FAST)
    versions = client.search_model_versions("name='digits-cnn'")
    files = [v.tags["sha256"] for v in versions]
    assert len(files) == len(set(files)), [v.tags.get("variant") for v in versions]
    assert second.version == "1" and not second.champion_moved
    # the edge champion's own .ort was rebuilt and timed in this run's one-thread rounds
    decided = next(d for d in second.decisions if d.alias == "champion-edge")
    assert (
        decided.against == str(edge.version) and f"edge champion v{edge.version}" in decided.reason
    )
    assert "identical to champion v1" in second.reason
    runs = client.search_runs(
        [client.get_run(version.tags["source_run_id"]).info.experiment_id],
        order_by=["attributes.start_time DESC"],
    )
    assert runs[0].data.tags[f"reconfirmed.{version.tags['variant']}"] == "v1"
    again = client.get_model_version("digits-cnn", "1")
    assert again.tags["reconfirmed_by_run"] == runs[0].info.run_id
    assert again.tags["source_run_id"] == runs[1].info.run_id  # its own history is kept
