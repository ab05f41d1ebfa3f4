"""The run's data record, the cache keys, and LoggedModels that hold only their own metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxforge.cache import export_key, files_intact, train_key, variant_key
from onnxforge.data_record import materialize, read_splits
from onnxforge.datasets import load_splits
from onnxforge.errors import IntegrityError
from onnxforge.recipe import load_recipe
from onnxforge.records import BenchResult, ParityResult
from tests.conftest import DEFAULT_RECIPE


@pytest.fixture(scope="module")
def splits():
    return load_splits(load_recipe(DEFAULT_RECIPE).dataset)


def test_the_data_file_is_the_same_bytes_every_time(splits, tmp_path: Path) -> None:
    first = materialize(splits, tmp_path / "a")
    second = materialize(splits, tmp_path / "b")
    assert first.sha256 == second.sha256  # the data part of every cache key
    assert first.fingerprint == splits.fingerprint()
    back = read_splits(first)
    assert back.fingerprint() == splits.fingerprint()
    assert back.num_classes == first.num_classes == 10
    assert first.samples["x_test"] == len(splits.x_test)


def test_a_changed_data_file_is_refused_naming_it(splits, tmp_path: Path) -> None:
    data = materialize(splits, tmp_path)
    with open(data.path, "r+b") as handle:
        handle.seek(-10, 2)
        handle.write(b"0123456789")
    with pytest.raises(IntegrityError, match=r"data\.npz: sha256 mismatch"):
        read_splits(data)
    Path(data.path).unlink()
    with pytest.raises(IntegrityError, match=r"data\.npz: missing"):
        read_splits(data)


def test_multi_input_splits_round_trip(tmp_path: Path) -> None:
    from onnxforge.datasets import Splits

    x = {"ids": np.arange(12).reshape(6, 2), "mask": np.ones((6, 2))}
    parts = Splits(x, None, x, None, x, None)
    back = read_splits(materialize(parts, tmp_path))
    assert list(back.x_train) == ["ids", "mask"] and back.y_train is None
    assert back.fingerprint() == parts.fingerprint()


def test_cache_keys_follow_what_each_stage_reads() -> None:
    recipe = load_recipe(DEFAULT_RECIPE)
    key = train_key(recipe, "d1")
    assert key == train_key(recipe, "d1")
    assert key != train_key(recipe, "d2")
    assert key != train_key(load_recipe(DEFAULT_RECIPE, {"train.epochs": "3"}), "d1")
    # benchmark settings do not change what training makes
    assert key == train_key(load_recipe(DEFAULT_RECIPE, {"benchmark.rounds": "3"}), "d1")
    assert export_key(recipe, "c1", "d1") != export_key(recipe, "c2", "d1")
    settings = dict(recipe.requested_variants())["int8-dynamic"]
    assert variant_key("int8-dynamic", settings, "p1", "d1") != variant_key(
        "int8-dynamic", settings, "p2", "d1"
    )


def test_a_result_whose_file_changed_is_not_intact(tmp_path: Path) -> None:
    from onnxforge.onnx_files import sha256_of
    from onnxforge.records import ModelArtifact

    path = tmp_path / "m.onnx"
    path.write_bytes(b"model")
    artifact = ModelArtifact(
        path=str(path),
        sha256=sha256_of(path),
        variant="fp32",
        parent=None,
        producer="t",
        opset=17,
        size_bytes=5,
    )
    assert files_intact(artifact)
    path.write_bytes(b"other")
    assert not files_intact(artifact)
    path.unlink()
    assert not files_intact(artifact)


def test_each_logged_model_holds_only_its_own_metrics_and_the_run_stays_open(
    mlflow_store: str, tmp_path: Path
) -> None:
    from onnxforge.export import export_model
    from onnxforge.inputs import take
    from onnxforge.registry import log_variant_models
    from onnxforge.tracking import RunContext, client, log_metrics, start_run
    from onnxforge.training import train_model
    from onnxforge.variant_build import build_variant

    recipe = load_recipe(DEFAULT_RECIPE, {"train.epochs": "1"})
    data = materialize(load_splits(recipe.dataset), tmp_path)
    trained = train_model(recipe, tmp_path, lambda *_: None, data)
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data)
    settings = dict(recipe.requested_variants())["simplified"]
    build = build_variant("simplified", fp32, settings, tmp_path, read_splits(data).x_train)
    simplified = build.artifact
    assert simplified is not None, build.reason
    experiment_id, run_id = start_run(mlflow_store, "models-test", "r", {}, {})
    context = RunContext(
        tracking_uri=mlflow_store,
        experiment_id=experiment_id,
        run_id=run_id,
        work_dir=str(tmp_path),
    )
    log_metrics(context, {"train.test_accuracy": 0.5})  # a run metric no model should carry
    parity = [ParityResult(variant=v, passed=True, max_abs_err=0.1) for v in ("fp32", "simplified")]
    bench = [
        BenchResult(
            variant=v, provider="CPUExecutionProvider", batch_size=1, status="ok", p50_ms=1.0
        )
        for v in ("fp32", "simplified")
    ]
    example = take(read_splits(data).x_test, slice(0, 2))
    model_ids = log_variant_models(context, [fp32, simplified], parity, bench, example)
    mlflow_client = client(mlflow_store)
    for variant, model_id in model_ids.items():
        model = mlflow_client.get_logged_model(model_id)
        keys = {m.key for m in model.metrics}
        assert keys and all(key.startswith(("parity.", "bench.")) for key in keys), keys
        assert all(f".{variant}." in key for key in keys), (variant, keys)
        assert model.source_run_id == run_id and str(model.status.name) == "READY"
    assert mlflow_client.get_run(run_id).info.status == "RUNNING"
    # a retried log-models makes no twins
    assert log_variant_models(context, [fp32, simplified], parity, bench, example) == model_ids


def test_versions_are_created_with_a_description_a_link_and_a_log_line(
    mlflow_store: str, tmp_path: Path
) -> None:
    from onnxforge.registration import MODEL_VERSIONS_TAG, register_versions
    from onnxforge.tracking import RunContext, client, start_run

    experiment_id, run_id = start_run(mlflow_store, "versions-test", "r", {}, {})
    context = RunContext(
        tracking_uri=mlflow_store,
        experiment_id=experiment_id,
        run_id=run_id,
        work_dir=str(tmp_path),
    )
    mlflow_client = client(mlflow_store)
    model = mlflow_client.create_logged_model(experiment_id, name="fp32", source_run_id=run_id)
    lines: list[str] = []
    tags = {"variant": "fp32", "source_run_id": run_id}
    versions = register_versions(
        "m", context, {"fp32": model.model_id}, {"fp32": tags}, log=lines.append
    )
    version = mlflow_client.get_model_version("m", versions["fp32"])
    assert version.description.startswith("fp32 from MLflow run")
    assert version.tags["onnxforge.state"] == "pending"
    assert (
        '"version": "1"' in mlflow_client.get_logged_model(model.model_id).tags[MODEL_VERSIONS_TAG]
    )
    assert lines == ["created m v1 (fp32, 4 tags, pending)"]
    # a retried register finds the version this run made instead of making a twin
    again = register_versions(
        "m", context, {"fp32": model.model_id}, {"fp32": tags}, log=lines.append
    )
    assert again == versions and "exists from this run's earlier try" in lines[-1]


def test_the_data_is_the_runs_dataset_input(splits, mlflow_store: str, tmp_path: Path) -> None:
    from onnxforge.data_record import log_dataset_input
    from onnxforge.tracking import client, start_run

    data = materialize(splits, tmp_path)
    _, run_id = start_run(mlflow_store, "dataset-test", "r", {}, {})
    log_dataset_input(mlflow_store, run_id, load_recipe(DEFAULT_RECIPE).dataset, data)
    (used,) = client(mlflow_store).get_run(run_id).inputs.dataset_inputs
    assert used.dataset.name == "sklearn:digits"
    assert data.sha256.startswith(used.dataset.digest)
    assert "sklearn.datasets.load_digits" in used.dataset.source
    tags = {tag.key: tag.value for tag in used.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["onnxforge.data_sha256"] == data.sha256
