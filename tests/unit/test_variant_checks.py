"""Build-time checks of variants, old opsets before per-channel quantization, and true sizes.

The fixtures are tiny ONNX CNNs built here with onnx.helper at opset 9, as old model-zoo files
are: int8-static with per-channel weights writes DequantizeLinear's `axis`, which opset 9 lacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.onnx_files import describe_onnx
from onnxforge.pipeline import built_artifacts, parent_for
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.variant_build import build_variant
from onnxforge.variants import VARIANTS, Made, VariantSpec
from onnxforge.variants.int8_dynamic import DynamicSettings
from onnxforge.variants.int8_static import StaticSettings

SAMPLES = np.random.default_rng(0).normal(size=(48, 1, 6, 6)).astype(np.float32)


def _cnn(folder: Path, middle: str = "Relu", batch: int | str = "batch", name="cnn") -> Path:
    """Conv -> `middle` -> Flatten -> Gemm at opset 9, seeded weights."""
    rng = np.random.default_rng(1)
    weights = {
        "w": rng.normal(size=(4, 1, 3, 3)),
        "b": rng.normal(size=(4,)),
        "fw": rng.normal(size=(10, 144)),
        "fb": rng.normal(size=(10,)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node(middle, ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model, full_check=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _fp32(path: Path) -> ModelArtifact:
    return describe_onnx(path, "fp32", None, "onnx.helper")


def _loads_and_runs(path: str, batch: int = 2) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": SAMPLES[:batch]})[0]


def _dequantize_axes(path: str) -> list[int]:
    model = onnx.load(path)
    return [
        attribute.i
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
        for attribute in node.attribute
        if attribute.name == "axis"
    ]


def test_opset9_int8_static_per_channel_is_upgraded_and_loads(tmp_path: Path) -> None:
    parent = _fp32(_cnn(tmp_path))
    build = build_variant("int8-static", parent, StaticSettings(), tmp_path / "out", SAMPLES)

    # a valid variant or a recorded build_failed; never a "built" file that fails to load
    if build.status == "build_failed":
        assert build.artifact is None and build.reason
        assert not (tmp_path / "out" / "int8-static.onnx").exists()
        pytest.fail(f"expected the opset upgrade to work here: {build.reason}")
    artifact = build.artifact
    assert artifact is not None and build.status == "built"
    assert artifact.opset == 13  # upgraded for DequantizeLinear's axis
    assert _dequantize_axes(artifact.path), "per-channel weights kept"
    assert "opset 9 upgraded to 13" in artifact.notes[0]
    assert "per_channel=True" in artifact.producer and "upgraded" in artifact.producer
    assert "onnx.checker full_check passed" in artifact.checks
    assert "inference on 2 samples" in artifact.checks
    outputs = _loads_and_runs(artifact.path)
    assert outputs.shape == (2, 10) and np.isfinite(outputs).all() and outputs.std() > 0


def test_per_channel_turned_off_with_the_reason_when_the_upgrade_fails(tmp_path: Path) -> None:
    # onnx 1.23's converter turns opset-9 MeanVarianceNormalization into an opset-13 model that
    # fails its own checker (an empty Constant); ORT's own upgrade to 11 works.
    parent = _fp32(_cnn(tmp_path, middle="MeanVarianceNormalization"))
    build = build_variant("int8-static", parent, StaticSettings(), tmp_path / "out", SAMPLES)

    assert build.status == "built", build.reason
    artifact = build.artifact
    assert artifact is not None
    (note,) = artifact.notes
    assert note.startswith("per_channel turned off") and "could not upgrade" in note
    assert "opset 9" in note and "ShapeInferenceError" in note  # the tool's own message
    assert "per_channel=False" in artifact.producer
    assert _dequantize_axes(artifact.path) == []
    assert _loads_and_runs(artifact.path).shape == (2, 10)


def _old_quantizer(parent: Path, settings: StaticSettings, out_path: Path, train) -> Made:
    """int8-static as it was before the opset check: per-channel QDQ on the model as it is."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from onnxforge.variants.quantization import ArrayReader, graph_input_names

    reader = ArrayReader(graph_input_names(parent), train)
    quantize_static(
        str(parent), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True
    )
    return Made("quantize_static without the opset check")


def test_an_invalid_variant_is_build_failed_and_its_child_uses_the_nearest_valid_ancestor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = VARIANTS["int8-static"]
    monkeypatch.setitem(
        VARIANTS,
        "old-int8-static",
        VariantSpec(
            "old-int8-static",
            "fp32",
            StaticSettings,
            _old_quantizer,
            static.default_tolerance,
            "any",
            "per-channel QDQ without the opset check",
        ),
    )
    dynamic = VARIANTS["int8-dynamic"]
    monkeypatch.setitem(
        VARIANTS,
        "child",
        VariantSpec(
            "child",
            "old-int8-static",
            DynamicSettings,
            dynamic.make,
            dynamic.default_tolerance,
            "any",
            "made from old-int8-static when it builds",
        ),
    )
    out = tmp_path / "out"
    builds = [VariantBuild(variant="fp32", artifact=_fp32(_cnn(tmp_path)))]
    for name, settings in (("old-int8-static", StaticSettings()), ("child", DynamicSettings())):
        builds.append(
            build_variant(name, parent_for(name, builds, settings), settings, out, SAMPLES)
        )
    broken, child = builds[1], builds[2]

    assert broken.status == "build_failed" and broken.artifact is None
    assert broken.reason.startswith("made from fp32: onnx.checker (full_check): ")
    assert "Unrecognized attribute: axis for operator DequantizeLinear" in broken.reason
    assert not (out / "old-int8-static.onnx").exists()  # never renamed into place
    assert not list(out.glob(".old-int8-static*"))  # no temp file left either
    assert child.status == "built" and child.artifact is not None
    assert child.artifact.parent == "fp32"  # the nearest valid ancestor
    assert [a.variant for a in built_artifacts(builds)] == ["fp32", "child"]  # what gets logged


def test_a_fixed_batch_model_is_checked_on_the_batch_it_accepts(tmp_path: Path) -> None:
    parent = _fp32(_cnn(tmp_path, batch=1))
    build = build_variant("int8-dynamic", parent, DynamicSettings(), tmp_path / "out", SAMPLES)
    assert build.status == "built", build.reason
    assert "inference on 1 samples" in build.artifact.checks
    assert _loads_and_runs(build.artifact.path, batch=1).shape == (1, 10)


def test_a_gpu_variant_records_what_was_checked(tmp_path: Path) -> None:
    from onnxforge.variants.fp16 import Fp16Settings

    parent = _fp32(_cnn(tmp_path))
    build = build_variant("fp16", parent, Fp16Settings(), tmp_path / "out", SAMPLES)
    assert build.status == "built", build.reason
    checks = build.artifact.checks
    assert checks.startswith("onnx.checker full_check passed")
    # either the CPU provider ran it, or the record says it could not and why
    assert "inference on 2 samples" in checks or "a GPU variant" in checks


def test_a_model_with_external_data_reports_its_true_size(tmp_path: Path) -> None:
    source = onnx.load(str(_cnn(tmp_path)))
    folder = tmp_path / "external"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(
        source,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    data_file = folder / "model.onnx.data"
    assert data_file.stat().st_size > path.stat().st_size  # the weights live in the data file

    fp32 = _fp32(path)
    assert fp32.size_bytes == path.stat().st_size + data_file.stat().st_size

    # a variant made from it is checked and sized the same way
    build = build_variant("int8-dynamic", fp32, DynamicSettings(), tmp_path / "out", SAMPLES)
    assert build.status == "built", build.reason
    assert build.artifact.size_bytes >= Path(build.artifact.path).stat().st_size
