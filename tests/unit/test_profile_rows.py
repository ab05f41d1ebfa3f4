"""Runtime profiles: parity and timing under the session a deployer will build, in this
interpreter or another one, with real ONNX Runtime sessions and measuring processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.benchmark import bench_contenders, profiled_runs
from onnxforge.onnx_files import describe_onnx
from onnxforge.parity import PLAIN, check_variant, parity_profiles, profile_outputs
from onnxforge.profiles import SKIP_LAYER_NORM_REMEDY, RuntimeProfile
from onnxforge.recipe import BenchmarkSpec
from onnxforge.records import ChampionRecord

CPU = "CPUExecutionProvider"
SPEC = BenchmarkSpec(warmup=1, rounds=2, iterations=3, batch_sizes=[1, 4], intra_op_threads=1)
# The pinned build, reached the way another runtime build is: through an interpreter path, in a
# process of its own (a venv with onnxruntime-openvino takes the same road).
ELSEWHERE = RuntimeProfile(name="elsewhere", python=sys.executable)


def _encoder_block(path: Path, opset: int = 17) -> Path:
    """x[batch, 16] -> MatMul -> Add(x) -> LayerNormalization -> MatMul -> softmax over 4
    classes: the residual-then-LayerNorm shape that SkipLayerNormFusion rewrites."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(16, np.float32), "beta"),
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "x"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def block(tmp_path: Path):
    path = _encoder_block(tmp_path / "fp32.onnx")
    return describe_onnx(path, "fp32", None, "test", "built in the test")


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)


def test_outputs_agree_under_every_profile_in_and_out_of_process(block, features) -> None:
    plain, names = profile_outputs(block, CPU, PLAIN, features)
    remedy, _ = profile_outputs(block, CPU, SKIP_LAYER_NORM_REMEDY, features)
    elsewhere, other_names = profile_outputs(block, CPU, ELSEWHERE, features)
    assert names == other_names == ["probs"]
    assert plain[0].shape == remedy[0].shape == elsewhere[0].shape == (40, 4)
    np.testing.assert_allclose(remedy[0], plain[0], atol=1e-5)
    np.testing.assert_allclose(elsewhere[0], plain[0], atol=1e-6)


def test_parity_is_checked_under_each_profile_the_benchmark_may_time(
    block, features, digits_recipe
) -> None:
    recipe = digits_recipe.model_copy(
        update={
            "benchmark": digits_recipe.benchmark.model_copy(
                update={"profiles": [PLAIN, SKIP_LAYER_NORM_REMEDY, ELSEWHERE]}
            )
        }
    )
    tried = [p.name for p in parity_profiles(recipe.benchmark, block)]
    assert tried == ["default", "no-skiplayernorm", "elsewhere"]
    reference, _ = profile_outputs(block, CPU, PLAIN, features)
    for profile in parity_profiles(recipe.benchmark, block):
        result = check_variant(recipe, block, features, None, reference, profile)
        assert result.passed and result.profile == profile.name, result.failures


def test_a_remedy_applies_only_where_its_fusion_can_fire(tmp_path: Path, block) -> None:
    from tests.integration.test_benchmark import _matmul_model

    plain_graph = _matmul_model(tmp_path / "mm.onnx", 8)
    matmul = describe_onnx(plain_graph, "simplified", "fp32", "test", "built in the test")
    spec = BenchmarkSpec(profiles=[PLAIN, SKIP_LAYER_NORM_REMEDY])
    pairs = [(a.variant, p.name) for a, p in profiled_runs(spec, CPU, [block, matmul])]
    assert pairs == [("fp32", "default"), ("fp32", "no-skiplayernorm"), ("simplified", "default")]
    # the remedy is for the CPU provider only; a pair that failed parity is not timed
    assert [p.name for _, p in profiled_runs(spec, "CUDAExecutionProvider", [block])] == ["default"]
    passed = (("fp32", "default"),)
    assert [p.name for _, p in profiled_runs(spec, CPU, [block], passed)] == ["default"]


def test_every_row_names_its_profile_and_a_champion_runs_its_stored_one(
    tmp_path: Path, block
) -> None:
    from onnxforge.inputs import save

    features = tmp_path / "features.npz"
    save(np.random.default_rng(2).normal(size=(8, 16)).astype(np.float32), features)
    stored = {"name": "elsewhere", "settings": {}, "runtime": {"python": sys.executable}}
    champion = ChampionRecord(
        version="4",
        aliases=("champion",),
        variant="fp32",
        sha256=block.sha256,
        path=block.path,
        verified=True,
        profiles={"cpu": stored},
    )
    runs = [(block, PLAIN), (block, SKIP_LAYER_NORM_REMEDY), (block, ELSEWHERE)]
    rows = bench_contenders(SPEC, CPU, runs, [champion], None, features)
    got = {(r.variant, r.profile, r.batch_size): r.status for r in rows}
    assert got == {
        (variant, profile, size): "ok"
        for variant, profile in [
            ("fp32", "default"),
            ("fp32", "no-skiplayernorm"),
            ("fp32", "elsewhere"),
            ("champion-v4", "elsewhere"),
        ]
        for size in (1, 4)
    }, [r.reason for r in rows]


def test_an_interpreter_missing_on_this_host_is_an_unsupported_row(tmp_path: Path, block) -> None:
    from onnxforge.inputs import save

    features = tmp_path / "features.npz"
    save(np.zeros((4, 16), np.float32), features)
    gone = RuntimeProfile(name="gone", python=str(tmp_path / "no-venv" / "bin" / "python"))
    rows = bench_contenders(SPEC, CPU, [(block, gone)], [], None, features)
    assert {r.status for r in rows} == {"unsupported"}
    assert all("not on this host" in r.reason and r.profile == "gone" for r in rows)


def test_the_version_tag_holds_what_a_deployer_rebuilds() -> None:
    from onnxforge.registration import profile_tags

    tags = profile_tags(
        BenchmarkSpec(intra_op_threads=2, profiles=[PLAIN, SKIP_LAYER_NORM_REMEDY]),
        {CPU: "no-skiplayernorm"},
    )
    stored = json.loads(tags["profile.cpu"])
    assert stored["name"] == "no-skiplayernorm" and stored["provider"] == CPU
    assert stored["settings"] == {"disabled_optimizers": ["SkipLayerNormFusion"]}
    assert (stored["intra_op_threads"], stored["inter_op_threads"]) == (2, 1)
    import onnxruntime

    assert stored["runtime"]["onnxruntime"] == onnxruntime.__version__
    assert stored["runtime"]["python"] is None
