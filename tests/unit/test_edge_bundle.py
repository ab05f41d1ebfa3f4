"""The edge bundle with real ONNX Runtime tools: ORT-format conversion of a float and an int8
file, the .ort file's parity against the source, the operator config of a reduced build, the
usability report, single-thread rows and the budgeted choice. No assertion rests on a timing
value or on bit-exact floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxforge.edge import (
    EdgeCandidate,
    build_bundle,
    choose_edge,
    edge_parity,
    edge_rows,
    required_operators,
)
from onnxforge.errors import StageError
from onnxforge.onnx_files import describe_onnx, sha256_of
from onnxforge.parity import PLAIN, profile_outputs
from onnxforge.recipe import BenchmarkSpec, EdgeSpec
from onnxforge.runtime import make_session
from tests.unit.test_profile_rows import _encoder_block

CPU = "CPUExecutionProvider"


@pytest.fixture
def fp32(tmp_path: Path):
    path = _encoder_block(_mkdir(tmp_path / "model" / "fp32.onnx"))
    return describe_onnx(path, "fp32", None, "test", "built in the test")


@pytest.fixture
def int8(tmp_path: Path, fp32):
    from onnxruntime.quantization import quantize_dynamic

    path = _mkdir(tmp_path / "int8" / "int8-dynamic.onnx")
    quantize_dynamic(fp32.path, path)
    return describe_onnx(path, "int8-dynamic", "fp32", "test", "built in the test")


@pytest.fixture
def features() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(64, 16)).astype(np.float32)


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _op_types(path: str) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


def test_float_and_int8_files_convert_and_their_ort_files_pass_parity(
    tmp_path: Path, fp32, int8, features, digits_recipe
) -> None:
    reference, _ = profile_outputs(fp32, CPU, PLAIN, features)
    out_dir = tmp_path / "edge"
    for artifact in (fp32, int8):
        bundle = build_bundle(artifact, EdgeSpec(), out_dir)
        folder = out_dir / artifact.variant
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{artifact.variant}.ort",
            f"{artifact.variant}.required_operators.config",
            f"{artifact.variant}.usability.txt",
        ]
        for path, digest in (
            (bundle.ort_path, bundle.ort_sha256),
            (bundle.ops_config_path, bundle.ops_config_sha256),
            (bundle.usability_path, bundle.usability_sha256),
        ):
            assert sha256_of(path) == digest
        assert bundle.ort_size_bytes == Path(bundle.ort_path).stat().st_size
        report = Path(bundle.usability_path).read_text()
        assert report.startswith(f"Checking {artifact.variant}.onnx for usability")
        assert "NNAPI" in bundle.usability and "CoreML" in bundle.usability
        # the .ort file computes what its .onnx computes
        onnx_out = make_session(artifact.path, CPU).run(None, {"x": features})[0]
        ort_out = make_session(bundle.ort_path, CPU).run(None, {"x": features})[0]
        np.testing.assert_allclose(ort_out, onnx_out, rtol=1e-4, atol=1e-5)
        result = edge_parity(digits_recipe, bundle, features, None, reference)
        assert (result.variant, result.profile) == (artifact.variant, "edge")
        assert result.passed, result.failures
    assert sorted(p.name for p in out_dir.iterdir()) == ["fp32", "int8-dynamic"]  # no staging


def test_the_operator_config_lists_what_a_reduced_build_must_run(
    tmp_path: Path, fp32, int8
) -> None:
    # Runtime style: the config covers the graph with or without the saved optimizations, so a
    # build from it runs the model as exported
    runtime = build_bundle(int8, EdgeSpec(optimization_style="Runtime"), tmp_path / "runtime")
    operators = required_operators(Path(runtime.ops_config_path).read_text())
    assert _op_types(int8.path) <= operators["ai.onnx"]
    assert Path(runtime.ort_path).name == "int8-dynamic.with_runtime_opt.ort"
    # Fixed: the optimized graph's operators; those no optimizer rewrites here stay by name
    fixed = build_bundle(fp32, EdgeSpec(target_platform="arm"), tmp_path / "fixed")
    text = Path(fixed.ops_config_path).read_text()
    assert {"Softmax", "LayerNormalization"} <= required_operators(text)["ai.onnx"]
    # the header names the model, not where it was built: same model, same config bytes
    assert str(tmp_path) not in text and "fp32.ort" in text
    again = build_bundle(fp32, EdgeSpec(target_platform="arm"), tmp_path / "again")
    assert again.ops_config_sha256 == fixed.ops_config_sha256


def test_a_file_the_converter_refuses_names_the_stage_and_variant(tmp_path: Path, fp32) -> None:
    broken = _mkdir(tmp_path / "bad" / "model.onnx")
    broken.write_bytes(b"not a model")
    artifact = fp32.model_copy(update={"path": str(broken), "variant": "int8-static"})
    with pytest.raises(StageError) as refused:
        build_bundle(artifact, EdgeSpec(), tmp_path / "edge")
    assert refused.value.stage == "edge" and refused.value.variant == "int8-static"
    assert "convert_onnx_models_to_ort" in refused.value.reason
    missing = fp32.model_copy(update={"path": str(tmp_path / "gone.onnx")})
    with pytest.raises(StageError, match="stage edge failed .variant fp32"):
        build_bundle(missing, EdgeSpec(), tmp_path / "edge")
    assert list((tmp_path / "edge").iterdir()) == []  # nothing half-built is left


def test_single_thread_rows_and_the_choice_within_the_memory_budget(
    tmp_path: Path, fp32, int8, features, digits_recipe
) -> None:
    from onnxforge.inputs import save

    reference, _ = profile_outputs(fp32, CPU, PLAIN, features)
    bundles = [build_bundle(a, EdgeSpec(), tmp_path / "edge") for a in (fp32, int8)]
    fed = tmp_path / "features.npz"
    save(features[:8], fed)
    rows = edge_rows(BenchmarkSpec(warmup=1, rounds=2, iterations=3), bundles, fed)
    assert [(r.variant, r.provider, r.profile, r.batch_size) for r in rows] == [
        ("fp32", CPU, "edge", 1),
        ("int8-dynamic", CPU, "edge", 1),
    ]
    assert all((r.intra_op_threads, r.inter_op_threads) == (1, 1) for r in rows)
    assert all(r.status == "ok" and r.peak_rss_increase_mb is not None for r in rows)
    candidates = [
        EdgeCandidate(
            bundle=b, parity=edge_parity(digits_recipe, b, features, None, reference), row=r
        )
        for b, r in zip(bundles, rows, strict=True)
    ]
    chosen, reason = choose_edge(candidates, budget_mb=10_000)
    assert chosen == min(rows, key=lambda r: r.p50_ms).variant
    assert "fastest single-thread .ort" in reason
    below_all = min(r.peak_rss_increase_mb for r in rows) - 1.0
    chosen, reason = choose_edge(candidates, budget_mb=below_all)
    assert chosen is None and f"over the {below_all:g} MB budget" in reason
    assert "fp32" in reason and "int8-dynamic" in reason
