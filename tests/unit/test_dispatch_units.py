"""The parts of benchmark dispatch that need no worker: the recipe's `benchmark.pools`, the
servers check before any work, the rows a dispatch that measured nothing reports, the check
of the rows a worker wrote (against a real MLflow store), and the summary's "Measured on"."""

from __future__ import annotations

import pytest

from onnxforge.dispatch import (
    DispatchRequest,
    ShippedFile,
    read_rows,
    unmeasured_rows,
    where_measured,
    write_rows,
)
from onnxforge.errors import RecipeError
from onnxforge.recipe import load_recipe
from onnxforge.records import BenchResult, ModelArtifact
from tests.conftest import DEFAULT_RECIPE

CPU_ONLY = {"benchmark.providers": "[CPUExecutionProvider]", "benchmark.batch_sizes": "[1, 4]"}


def _request(run_id: str = "run", baseline: bool = False) -> DispatchRequest:
    recipe = load_recipe(DEFAULT_RECIPE, CPU_ONLY)
    artifact = ModelArtifact(
        path=f"runs:/{run_id}/benchmark/dispatch/CPUExecutionProvider/fp32/model.onnx",
        sha256="0" * 64,
        variant="fp32",
        parent=None,
        producer="test",
        opset=17,
        size_bytes=10,
    )
    shipped = ShippedFile(uri=f"runs:/{run_id}/x/inputs.npz", sha256="1" * 64)
    return DispatchRequest(
        benchmark=recipe.benchmark,
        framework=recipe.model.framework,
        recipe=recipe.model_dump(mode="json", by_alias=True) if baseline else None,
        provider="CPUExecutionProvider",
        pool="cpu-b",
        run_id=run_id,
        artifacts=(artifact,),
        champions=(),
        features=shipped,
        checkpoint=shipped if baseline else None,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"benchmark.pools.CUDAExecutionProvider": "gpu"}, "not among benchmark.providers"),
        ({"benchmark.pools.CPUExecutionProvider": "bad pool!"}, "should match pattern"),
        ({"benchmark.pools.NopeProvider": "cpu"}, "benchmark.pools.NopeProvider"),
    ],
)
def test_a_bad_pool_mapping_is_refused_naming_the_field(overrides, expected) -> None:
    with pytest.raises(RecipeError, match=expected) as caught:
        load_recipe(DEFAULT_RECIPE, {**CPU_ONLY, **overrides})
    assert "digits_cnn.yaml" in str(caught.value) and "pools" in str(caught.value)


def test_pools_need_servers_a_worker_can_reach(monkeypatch, tmp_path) -> None:
    from onnxforge.preflight import check_dispatch_servers

    recipe = load_recipe(DEFAULT_RECIPE, {**CPU_ONLY, "benchmark.pools.CPUExecutionProvider": "p"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    with pytest.raises(RecipeError, match="benchmark.pools: CPUExecutionProvider -> p.*sqlite"):
        check_dispatch_servers(recipe, "configs/digits_cnn.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("ONNXFORGE_EMBEDDED_PREFECT", "1")  # the CLI's temporary server
    with pytest.raises(RecipeError, match="PREFECT_API_URL"):
        check_dispatch_servers(recipe, "configs/digits_cnn.yaml")
    check_dispatch_servers(load_recipe(DEFAULT_RECIPE, CPU_ONLY), "x.yaml")  # no pools: fine


def test_a_dispatch_that_measured_nothing_has_a_row_per_contender_and_batch_size() -> None:
    rows = unmeasured_rows(_request(baseline=True), "no-worker", "nobody", {"pool": "cpu-b"})
    assert [(r.variant, r.batch_size) for r in rows] == [
        ("fp32", 1),
        ("fp32", 4),
        ("pytorch-eager", 1),
        ("pytorch-eager", 4),
    ]
    assert {(r.status, r.reason, r.pool, r.group) for r in rows} == {
        ("no-worker", "nobody", "cpu-b", "CPUExecutionProvider")
    }
    assert [r.provider for r in rows] == ["CPUExecutionProvider"] * 2 + ["framework"] * 2
    assert all(r.p50_ms is None and r.host == "" for r in rows)


def test_the_rows_read_back_must_be_the_flow_runs_and_cover_what_was_asked(
    mlflow_store: str,
) -> None:
    from onnxforge.tracking import client, ensure_experiment

    mlflow_client = client(mlflow_store)
    run_id = mlflow_client.create_run(ensure_experiment(mlflow_store, "t")).info.run_id
    request = _request(run_id)
    where = where_measured("cpu-b")
    rows = [
        BenchResult(
            variant="fp32",
            provider="CPUExecutionProvider",
            group="CPUExecutionProvider",
            batch_size=size,
            status="ok",
            p50_ms=1.0,
            **where,
        )
        for size in (1, 4)
    ]
    write_rows(mlflow_client, request, "flow-a", rows, measure_s=3.5)
    got, measure_s = read_rows(mlflow_client, request, "flow-a")
    assert got == rows and measure_s == 3.5
    with pytest.raises(ValueError, match="written by flow run flow-a, not by flow-b"):
        read_rows(mlflow_client, request, "flow-b")
    other = [r.model_copy(update={"variant": "int8-dynamic"}) for r in rows]
    write_rows(mlflow_client, request, "flow-c", other, measure_s=1.0)
    with pytest.raises(ValueError, match="asked for \\[\\('fp32', 1\\), \\('fp32', 4\\)\\]"):
        read_rows(mlflow_client, request, "flow-c")


def test_the_summary_says_where_each_providers_rounds_ran() -> None:
    from onnxforge.report import _measured_where

    here = BenchResult(
        variant="fp32", provider="CUDAExecutionProvider", batch_size=1, status="ok", host="h1"
    )
    there = BenchResult(
        variant="fp32",
        provider="CPUExecutionProvider",
        group="CPUExecutionProvider",
        batch_size=1,
        status="ok",
        host="h2",
        pool="cpu-b",
        worker="w-1",
    )
    lost = there.model_copy(update={"status": "no-worker", "host": "", "worker": ""})
    (line,) = [text for text in _measured_where([here, there, lost]) if text]
    assert line == (
        "Measured on: CPUExecutionProvider: worker w-1 of work pool cpu-b on h2; "
        "CUDAExecutionProvider: this flow's host h1"
    )


def test_a_request_with_a_label_that_is_not_a_name_is_refused() -> None:
    request = _request()
    escaping = request.artifacts[0].model_copy(update={"variant": "../../etc"})
    with pytest.raises(ValueError, match="not a row name"):
        DispatchRequest.model_validate({**request.model_dump(), "artifacts": [escaping]})
    with pytest.raises(ValueError, match="outside the model's folder"):
        DispatchRequest.model_validate(
            {**request.model_dump(), "external_data": {"fp32": {"../x.bin": "0" * 64}}}
        )


def test_external_data_travels_beside_its_model_and_is_checked_too(
    mlflow_store: str, tmp_path
) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxforge.dispatch import RoundFiles, fetch_verified, ship_request
    from onnxforge.errors import IntegrityError
    from onnxforge.inputs import save
    from onnxforge.onnx_files import describe_onnx
    from onnxforge.tracking import client, ensure_experiment, state_dir

    weights = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [weights],
    )
    path = tmp_path / "fp32" / "model.onnx"
    (path.parent / "data").mkdir(parents=True)  # a location in a subfolder of its own
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="data/weights.bin",
        size_threshold=0,
    )
    artifact = describe_onnx(path, "fp32", None, "test")
    features = tmp_path / "inputs.npz"
    save(np.zeros((4, 64), np.float32), features)
    mlflow_client = client(mlflow_store)
    run_id = mlflow_client.create_run(ensure_experiment(mlflow_store, "t")).info.run_id
    recipe = load_recipe(DEFAULT_RECIPE, CPU_ONLY)
    files = RoundFiles([artifact], [], features)
    request = ship_request(recipe, "CPUExecutionProvider", "p", files, mlflow_client, run_id)
    assert list(request.external_data["fp32"]) == ["data/weights.bin"]
    shipped = ShippedFile(uri=request.artifacts[0].path, sha256=artifact.sha256)
    companions = request.external_data["fp32"]
    local = fetch_verified(shipped, tmp_path / "ok", mlflow_store, companions)
    assert (local.parent / "data" / "weights.bin").read_bytes() == (
        path.parent / "data" / "weights.bin"
    ).read_bytes()
    (stored,) = state_dir().rglob(f"{run_id}/**/fp32/data/weights.bin")
    stored.write_bytes(b"\xff" + stored.read_bytes()[1:])  # one byte changed
    with pytest.raises(IntegrityError, match="data/weights.bin: sha256 of the downloaded file"):
        fetch_verified(shipped, tmp_path / "tampered", mlflow_store, companions)


def test_a_worker_is_lost_after_three_silent_intervals_by_this_hosts_clock(monkeypatch) -> None:
    from types import SimpleNamespace

    import tasks.dispatch as dispatch

    now = [1000.0]
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: now[0])
    stamps = {"w-1": 1, "w-2": 1}

    class Pool:  # what read_workers_for_work_pool returns: names, stamps, intervals, status
        def read_workers_for_work_pool(self, pool):
            return [
                SimpleNamespace(
                    name=name,
                    last_heartbeat_time=stamp,
                    heartbeat_interval_seconds=5,
                    status="ONLINE",
                )  # fmt: skip
                for name, stamp in stamps.items()
            ]

    heartbeats = dispatch.Heartbeats("cpu-b")
    heartbeats.refresh(Pool())
    tagged = ["onnxforge", "onnxforge-worker:w-1"]
    assert heartbeats.lost(tagged) is None
    for _ in range(4):  # w-2 keeps beating, w-1 falls silent
        now[0] += 5
        stamps["w-2"] += 1
        heartbeats.refresh(Pool())
    assert heartbeats.alive() == ["w-2"]
    # The run's own worker is gone although another worker of the pool lives.
    assert heartbeats.lost(tagged) == "worker w-1 of pool cpu-b"
    assert heartbeats.lost(["onnxforge"]) is None  # untagged: any live worker will do
