"""The edge bundle: ORT-format conversion, its parity against the source, the operator config
of a reduced build, the usability verdict, single-thread rows and the budgeted choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxforge.edge import EdgeCandidate, build_bundle, choose_edge, edge_parity, edge_rows
from onnxforge.errors import StageError
from onnxforge.onnx_files import describe_onnx
from onnxforge.parity import PLAIN, profile_outputs
from onnxforge.recipe import BenchmarkSpec, EdgeSpec
from tests.integration.test_profiles import _encoder_block

CPU = "CPUExecutionProvider"


@pytest.fixture
def fp32(tmp_path: Path):
    path = _encoder_block(_mkdir(tmp_path / "model" / "fp32.onnx"))
    return describe_onnx(path, "fp32", None, "test", "built in the test")


@pytest.fixture
def int8(tmp_path: Path, fp32):
    from onnxruntime.quantization import quantize_dynamic

    path = tmp_path / "int8" / "int8-dynamic.onnx"
    path.parent.mkdir()
    quantize_dynamic(fp32.path, path)
    return describe_onnx(path, "int8-dynamic", "fp32", "test", "built in the test")


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_bundles_convert_pass_parity_and_list_their_operators(
    tmp_path: Path, fp32, int8, digits_recipe
) -> None:
    features = np.random.default_rng(3).normal(size=(64, 16)).astype(np.float32)
    reference, _ = profile_outputs(fp32, CPU, PLAIN, features)
    bundles = [build_bundle(a, EdgeSpec(), tmp_path / "edge") for a in (fp32, int8)]
    for bundle in bundles:
        assert Path(bundle.ort_path).suffix == ".ort" and bundle.ort_size_bytes > 0
        ops = Path(bundle.ops_config_path).read_text()
        assert "ai.onnx" in ops and "MatMul" in ops or "MatMulInteger" in ops
        assert bundle.usability and Path(bundle.usability_path).read_text()
        result = edge_parity(digits_recipe, bundle, features, None, reference)
        assert result.profile == "edge" and result.variant == bundle.variant
        assert result.passed, result.failures
    # the .ort file computes what its .onnx computes
    from onnxforge.runtime import make_session

    ort_out = make_session(bundles[0].ort_path, CPU).run(None, {"x": features})[0]
    np.testing.assert_allclose(ort_out, reference[0], atol=1e-5)

    from onnxforge.inputs import save

    fed = tmp_path / "features.npz"
    save(features[:8], fed)
    spec = BenchmarkSpec(warmup=1, rounds=2, iterations=3)
    rows = edge_rows(spec, bundles, fed)
    assert [(r.variant, r.profile, r.batch_size, r.intra_op_threads) for r in rows] == [
        ("fp32", "edge", 1, 1),
        ("int8-dynamic", "edge", 1, 1),
    ]
    assert all(r.status == "ok" and r.peak_rss_increase_mb is not None for r in rows)
    candidates = [
        EdgeCandidate(
            bundle=b, parity=edge_parity(digits_recipe, b, features, None, reference), row=r
        )
        for b, r in zip(bundles, rows, strict=True)
    ]
    chosen, reason = choose_edge(candidates, budget_mb=10_000)
    fastest = min(rows, key=lambda r: r.p50_ms).variant
    assert chosen == fastest and "fastest single-thread .ort" in reason
    chosen, reason = choose_edge(candidates, budget_mb=-1)
    assert chosen is None and "over the -1 MB budget" in reason


def test_a_file_the_converter_refuses_names_the_stage_and_variant(tmp_path: Path) -> None:
    broken = _mkdir(tmp_path / "bad" / "fp32.onnx")
    broken.write_bytes(b"not a model")
    artifact = describe_onnx(_encoder_block(tmp_path / "ok.onnx"), "fp32", None, "t", "")
    artifact = artifact.model_copy(update={"path": str(broken), "variant": "int8-static"})
    with pytest.raises(StageError) as refused:
        build_bundle(artifact, EdgeSpec(), tmp_path / "edge")
    assert refused.value.stage == "edge" and refused.value.variant == "int8-static"
