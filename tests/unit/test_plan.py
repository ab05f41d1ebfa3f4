"""The run plan is the one picture of a run: one chain, one data path, one harness, narrow inputs."""

from __future__ import annotations

import ast
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Where the run is wired: the core, its Prefect wrappers, and the scripts that measure it.
WIRING = ["onnxforge", "tasks", "flows", "benchmarks", "deployments"]
MAX_PARAMETERS = 6


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _calls(tree: ast.AST, name: str) -> int:
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name)
    )


def test_the_variant_chain_is_wired_in_the_plan_only() -> None:
    """fp32 + requested variants + the parent of each is written once: pipeline.build_chain."""
    wired = []
    for path in _modules(*WIRING):
        tree = ast.parse(path.read_text())
        if _calls(tree, "requested_variants") and (
            _calls(tree, "parent_for") or _calls(tree, "buildable_from")
        ):
            wired.append(str(path.relative_to(REPO)))
    assert wired == ["onnxforge/pipeline.py"], wired


def test_no_core_stage_takes_optional_data_or_reads_the_recipe_dataset() -> None:
    """One data path: stages read the run's DataRecord (sha256-checked), never rebuild the data
    from the recipe. Only the plan's data step and the preflight's checks load the dataset."""
    optional, loaders = [], []
    for path in _modules("onnxforge", "tasks", "flows"):
        tree = ast.parse(path.read_text())
        where = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults))
                defaults += node.args.defaults + node.args.kw_defaults
                for arg, default in zip(args, defaults, strict=True):
                    if arg.arg == "data" and isinstance(default, ast.Constant):
                        optional.append(f"{where}:{node.name}")
        if _calls(tree, "load_splits") and where not in (
            "onnxforge/pipeline.py",
            "onnxforge/preflight.py",
            "onnxforge/datasets.py",
        ):
            loaders.append(where)
    assert optional == [] and loaders == [], (optional, loaders)


def test_no_function_of_the_run_takes_more_than_six_parameters() -> None:
    too_many = []
    for path in _modules("onnxforge", "tasks", "flows"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                names += [a.arg for a in node.args.kwonlyargs]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > MAX_PARAMETERS:
                    too_many.append(f"{path.relative_to(REPO)}:{node.name} ({count})")
    assert too_many == [], too_many


def test_scripts_and_deployments_use_public_names_only() -> None:
    private = []
    for path in _modules("benchmarks", "deployments", "flows", "tasks"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnxforge"):
                private += [
                    f"{path.relative_to(REPO)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert private == [], private


def _tiny_model(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _other_interpreter(tmp_path: Path) -> tuple[Path, Path]:
    """A second interpreter path (a wrapper that notes each start, then runs this Python), so
    the harness treats it as another runtime build."""
    log = tmp_path / "starts.log"
    python = tmp_path / "other-build" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\necho "$PYTHONPATH :: $*" >> {log}\nexec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python, log


def test_one_harness_times_contenders_of_another_runtime_build_with_session_settings(
    tmp_path: Path, digits_recipe
) -> None:
    """The same interleaved rounds time a contender in another interpreter (which finds this
    checkout's onnxforge on its PYTHONPATH) and one with session settings; both are scored in
    the build and session that timed them."""
    import numpy as np

    from onnxforge.benchmark import (
        Contender,
        contender_argmax,
        machine_lock_path,
        measure_interleaved,
        onnx_load,
    )
    from onnxforge.inputs import save

    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    features = tmp_path / "features.npz"
    samples = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    save(samples, features)
    spec = digits_recipe.benchmark.model_copy(
        update={"batch_sizes": [1, 4], "rounds": 2, "iterations": 3, "warmup": 1}
    )
    other, starts = _other_interpreter(tmp_path)
    cpu = "CPUExecutionProvider"
    settings = {
        "disabled_optimizers": ["MatMulAddFusion"],
        "graph_optimization_level": "ORT_ENABLE_BASIC",
    }
    contenders = [
        Contender("pinned", "run", onnx_load(str(model), cpu, spec, features)),
        Contender("other", "run", onnx_load(str(model), cpu, spec, features), None, str(other)),
        Contender("basic", "run", onnx_load(str(model), cpu, spec, features, settings)),
    ]
    rows = measure_interleaved(contenders, cpu, spec, machine_lock_path())
    assert [(r.variant, r.batch_size, r.status) for r in rows] == [
        (label, size, "ok") for label in ("pinned", "other", "basic") for size in (1, 4)
    ], [r.reason for r in rows]
    assert all(len(r.round_p50_ms) == 2 for r in rows)
    started = starts.read_text().splitlines()
    assert len(started) == 1 and started[0].endswith("-m onnxforge.bench_worker")
    assert started[0].split(" :: ")[0].split(os.pathsep)[0] == str(REPO)
    expected = (samples @ np.eye(4, 3)).argmax(1)
    for contender in contenders:
        assert contender_argmax(contender, features, 4) == expected.tolist()
    assert len(starts.read_text().splitlines()) == 2  # scored in the other build too


def test_unknown_session_settings_are_refused(tmp_path: Path) -> None:
    from onnxforge.runtime import make_session

    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    with pytest.raises(ValueError, match="unknown session settings"):
        make_session(str(model), "CPUExecutionProvider", settings={"intra_threads": 2})
