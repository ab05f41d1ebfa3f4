"""Dispatch one benchmark to a work pool, as the pipeline's benchmark task does, and print what
came back: run by tests/flows/test_dispatch.py in a process whose environment points at the
test's servers (PREFECT_API_URL, MLFLOW_TRACKING_URI and their credentials).

    python -m tests.dispatch_driver '{"pool": "...", "start_timeout_s": 5, ...}'

Two small ONNX models (a MatMul each, written with onnx.helper) are the contenders; with
`tamper`, the first one's stored copy is changed after it was shipped, as someone with write
access to the artifact store could. Prints one JSON line: the rows, the flow run and its state.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from onnxforge.dispatch import RoundFiles, ship_request
from onnxforge.inputs import save
from onnxforge.onnx_files import describe_onnx
from onnxforge.recipe import load_recipe
from onnxforge.tracking import client, ensure_experiment
from tasks.dispatch import dispatch

REPO = Path(__file__).resolve().parent.parent
FEATURES = 16


def _model(path: Path, seed: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(seed).standard_normal((FEATURES, FEATURES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", FEATURES])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def main(args: dict) -> None:
    work = Path(args["work_dir"])
    overrides = {
        "benchmark.providers": ["CPUExecutionProvider"],
        "benchmark.batch_sizes": [1],
        "benchmark.rounds": 2,
        "benchmark.warmup": 1,
        "benchmark.iterations": 20,
        "benchmark.baseline": False,
        **args.get("overrides", {}),
    }
    recipe = load_recipe(REPO / "configs" / "digits_cnn.yaml", overrides)
    artifacts = [
        describe_onnx(_model(work / name / "model.onnx", seed), name, None, "onnx.helper")
        for seed, name in enumerate(("fp32", "simplified"))
    ]
    features = work / "features.npz"
    rng = np.random.default_rng(0)
    save(rng.standard_normal((32, FEATURES)).astype(np.float32), features)
    mlflow_client = client(args["tracking_uri"])
    experiment = ensure_experiment(args["tracking_uri"], "dispatch-tests")
    run_id = mlflow_client.create_run(experiment).info.run_id
    files = RoundFiles(artifacts, [], features)
    request = ship_request(
        recipe, "CPUExecutionProvider", args["pool"], files, mlflow_client, run_id
    )
    if args.get("tamper"):
        stored = next(Path(args["artifacts_root"]).rglob(f"{run_id}/**/fp32/model.onnx"))
        stored.write_bytes(stored.read_bytes() + b"\0")
    started = time.monotonic()
    rows, flow_run_id, _ = dispatch(
        request, args["start_timeout_s"], args["timeout_s"], mlflow_client
    )
    elapsed = time.monotonic() - started
    state = None
    if flow_run_id:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as prefect_client:
            state = prefect_client.read_flow_run(flow_run_id).state.type.value
    print(
        json.dumps(
            {
                "rows": [row.model_dump(mode="json") for row in rows],
                "flow_run_id": flow_run_id,
                "state": state,
                "elapsed_s": elapsed,
            }
        )
    )


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
