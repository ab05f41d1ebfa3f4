"""Core stages on tiny models in tmp_path: train, export, simplify, quantize, parity, benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxforge.export import EXPORTER_KEY, export_model
from onnxforge.onnx_files import sha256_of
from onnxforge.parity import ParityBar, check_all, compare_outputs
from onnxforge.recipe import Recipe, load_recipe
from onnxforge.records import ModelArtifact, TrainResult
from onnxforge.training import train_model
from onnxforge.variant_build import build_variant
from onnxforge.variants import Tolerance
from tests.conftest import DEFAULT_RECIPE, data_of

# The default recipe trains in about 2 s; a smaller, undertrained model has logit margins so thin
# that int8 parity becomes a coin toss.
TINY: dict[str, str] = {}


@pytest.fixture(scope="module")
def tiny_recipe() -> Recipe:
    return load_recipe(DEFAULT_RECIPE, TINY)


@pytest.fixture(scope="module")
def trained(tiny_recipe: Recipe, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    epochs: list[int] = []
    folder = tmp_path_factory.mktemp("train")
    result = train_model(tiny_recipe, folder, lambda e, m: epochs.append(e), data_of(tiny_recipe))
    assert epochs == list(range(1, 16))
    return result


@pytest.fixture(scope="module")
def fp32(
    tiny_recipe: Recipe, trained: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> ModelArtifact:
    return export_model(
        tiny_recipe, trained.checkpoint, tmp_path_factory.mktemp("export"), data_of(tiny_recipe)
    )


def test_train_writes_a_weights_only_checkpoint(trained: TrainResult) -> None:
    import torch

    state = torch.load(trained.checkpoint, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert trained.checkpoint_sha256 == sha256_of(trained.checkpoint)
    assert trained.epochs_run == 15 and 0.0 <= trained.test_accuracy <= 1.0
    assert len(trained.dataset_hash) == 64


def test_export_records_exporter_and_names_dynamic_axes(fp32: ModelArtifact) -> None:
    model = onnx.load(fp32.path)
    props = {p.key: p.value for p in model.metadata_props}
    assert props[EXPORTER_KEY] == fp32.producer
    assert fp32.producer.startswith("torch.onnx.export[dynamo]")
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.dim_value
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert fp32.opset == 18 and fp32.sha256 == sha256_of(fp32.path)
    assert not Path(fp32.path + ".data").exists(), "weights must be inside the .onnx file"


def test_export_with_torchscript(tiny_recipe: Recipe, trained: TrainResult, tmp_path: Path) -> None:
    recipe = tiny_recipe.model_copy(
        update={"export": tiny_recipe.export.model_copy(update={"exporter": "torchscript"})}
    )
    artifact = export_model(recipe, trained.checkpoint, tmp_path, data_of(recipe))
    assert artifact.producer.startswith("torch.onnx.export[torchscript]")
    dims = onnx.load(artifact.path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"


def test_a_declared_axis_that_comes_out_fixed_is_an_export_error(
    trained: TrainResult, tmp_path: Path
) -> None:
    from onnxforge.errors import StageError
    from onnxforge.export import name_dynamic_axes
    from onnxforge.recipe import ExportSpec

    model = onnx.load(fp32_path_for_axes_test(trained, tmp_path))
    with pytest.raises(StageError, match=r"dimension 3 \(width\) came out fixed"):
        name_dynamic_axes(model, ExportSpec(dynamic_axes={0: "batch", 3: "width"}))
    # A dimension the input does not have cannot be declared either; the export leaves no file.
    recipe = load_recipe(DEFAULT_RECIPE, {"export.dynamic_axes": "{0: batch, 7: extra}"})
    with pytest.raises(StageError, match=r"dimension 7 \(extra\)"):
        export_model(recipe, trained.checkpoint, tmp_path / "out", data_of(recipe))
    assert list((tmp_path / "out").iterdir()) == []


def fp32_path_for_axes_test(trained: TrainResult, tmp_path: Path) -> str:
    """An export with only the batch axis dynamic, so the other dims are fixed values."""
    recipe = load_recipe(DEFAULT_RECIPE)
    return export_model(recipe, trained.checkpoint, tmp_path / "batch-only", data_of(recipe)).path


def _settings(recipe: Recipe, name: str):
    from onnxforge.variants import VARIANTS

    return dict(recipe.requested_variants()).get(name) or VARIANTS[name].settings()


def _build(recipe: Recipe, name: str, parent: ModelArtifact, out: Path, train: np.ndarray):
    return build_variant(name, parent, _settings(recipe, name), out, train)


def test_simplify_never_kills_the_run(
    tiny_recipe: Recipe, fp32: ModelArtifact, tmp_path: Path
) -> None:
    from onnxforge.variants.simplified import SimplifySettings

    too_big = build_variant(
        "simplified", fp32, SimplifySettings(max_bytes=10), tmp_path, np.zeros(1)
    )
    assert too_big.artifact is None and "over max_bytes=10" in too_big.reason
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    corrupt = fp32.model_copy(update={"path": str(broken), "size_bytes": 16})
    failed = build_variant("simplified", corrupt, SimplifySettings(), tmp_path, np.zeros(1))
    assert failed.artifact is None and failed.reason.startswith("made from fp32: ")
    assert not (tmp_path / "simplified.onnx").exists(), "no half-written file is left behind"


def test_a_variant_whose_tool_fails_is_a_result(
    tiny_recipe: Recipe, fp32: ModelArtifact, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    build = _build(
        tiny_recipe,
        "int8-dynamic",
        fp32.model_copy(update={"path": str(broken)}),
        tmp_path,
        np.zeros(1),
    )
    assert build.artifact is None and build.reason


@pytest.fixture(scope="module")
def all_variants(
    tiny_recipe: Recipe, fp32: ModelArtifact, tmp_path_factory: pytest.TempPathFactory
):
    """Every registered variant built from its registered parent."""
    from onnxforge.data_record import read_splits
    from onnxforge.pipeline import parent_for
    from onnxforge.records import VariantBuild
    from onnxforge.variants import VARIANTS

    out = tmp_path_factory.mktemp("variants")
    train = read_splits(data_of(tiny_recipe)).x_train
    builds = [VariantBuild(variant="fp32", artifact=fp32)]
    for name in VARIANTS:
        if name != "fp32":
            builds.append(_build(tiny_recipe, name, parent_for(name, builds), out, train))
    return {b.variant: b for b in builds}


EXPECTED_OPS = {
    "fp32": {"Conv", "Gemm"},
    "simplified": {"Conv", "Gemm"},
    "ort-optimized": {"FusedConv"},
    "int8-dynamic": {"ConvInteger", "DynamicQuantizeLinear"},
    "int8-static": {"QuantizeLinear", "DequantizeLinear"},
    "fp16": {"Cast"},
}


def test_every_registered_variant_has_a_test() -> None:
    from onnxforge.variants import VARIANTS

    assert set(EXPECTED_OPS) == set(VARIANTS), "add the new variant to EXPECTED_OPS and its tests"


@pytest.mark.parametrize("name", sorted(EXPECTED_OPS))
def test_every_registered_variant_is_built_and_validated(
    name: str, all_variants, tiny_recipe: Recipe, trained: TrainResult
) -> None:
    from onnxforge.variants import VARIANTS

    build = all_variants[name]
    assert build.artifact is not None, build.reason
    ops = {node.op_type for node in onnx.load(build.artifact.path).graph.node}
    assert EXPECTED_OPS[name] <= ops, ops
    assert build.artifact.parent == VARIANTS[name].parent
    assert build.artifact.producer
    (result,) = check_all(tiny_recipe, trained.checkpoint, [build.artifact], data_of(tiny_recipe))
    if VARIANTS[name].device == "gpu":  # no GPU provider in this onnxruntime build: typed not_run
        assert [f.kind for f in result.failures] == ["not_run"]
    else:
        assert result.passed, result.failures
        assert result.per_output and result.per_output[0].name == "logits"


def test_corrupted_weights_fail_parity_with_a_typed_failure(
    tiny_recipe: Recipe, trained: TrainResult, fp32: ModelArtifact, tmp_path: Path
) -> None:
    model = onnx.load(fp32.path)
    for initializer in model.graph.initializer:
        if len(initializer.dims) > 1:
            array = onnx.numpy_helper.to_array(initializer).copy()
            array[...] = np.random.default_rng(0).normal(size=array.shape)
            initializer.CopyFrom(onnx.numpy_helper.from_array(array, initializer.name))
    broken = tmp_path / "fp32.onnx"
    onnx.save(model, broken)
    (result,) = check_all(
        tiny_recipe,
        trained.checkpoint,
        [fp32.model_copy(update={"path": str(broken)})],
        data_of(tiny_recipe),
    )
    assert not result.passed
    assert {"tolerance_exceeded", "top1_below_floor"} <= {f.kind for f in result.failures}


def test_a_failing_int8_variant_names_the_drifting_layers(
    tiny_recipe: Recipe, trained: TrainResult, all_variants
) -> None:
    strict = {"parity.tolerances": "{int8-static: {atol: 0, mean_atol: 0, min_top1_agreement: 1}}"}
    recipe = load_recipe(DEFAULT_RECIPE, {**TINY, **strict})
    artifacts = [all_variants["simplified"].artifact, all_variants["int8-static"].artifact]
    results = {
        r.variant: r for r in check_all(recipe, trained.checkpoint, artifacts, data_of(recipe))
    }
    drift = results["int8-static"].drifting_layers
    assert not results["int8-static"].passed and drift
    assert [d.sqnr_db for d in drift] == sorted(d.sqnr_db for d in drift)
    graph_nodes = {n.name for n in onnx.load(artifacts[0].path).graph.node}
    assert {d.node for d in drift} <= graph_nodes


def test_static_calibration_is_deterministic(
    tiny_recipe: Recipe, all_variants, tmp_path: Path
) -> None:
    from onnxforge.datasets import load_splits

    train = load_splits(tiny_recipe.dataset).x_train
    parent = all_variants["simplified"].artifact
    first = _build(tiny_recipe, "int8-static", parent, tmp_path / "a", train).artifact
    second = _build(tiny_recipe, "int8-static", parent, tmp_path / "b", train).artifact
    assert first.sha256 == second.sha256 == all_variants["int8-static"].artifact.sha256


LOOSE = Tolerance(atol=9.0, mean_atol=9.0, min_top1_agreement=0.0)


def _logits() -> np.ndarray:
    return np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.5, 0.0, 2.0]], dtype=np.float32)


@pytest.mark.parametrize(
    ("outputs", "tolerance", "labels", "kind"),
    [
        ([], LOOSE, None, "output_missing"),
        ([np.zeros((3, 2), np.float32)], LOOSE, None, "shape_mismatch"),
        ([np.full((3, 3), np.nan, np.float32)], LOOSE, None, "non_finite"),
        ([np.ones((3, 3), np.float32)], LOOSE, None, "degenerate_output"),
        (
            [_logits() + 0.5],
            Tolerance(atol=0.1, mean_atol=1.0, min_top1_agreement=0),
            None,
            "tolerance_exceeded",
        ),
        ([_logits()[:, ::-1].copy()], LOOSE, None, None),
        (
            [_logits()[:, ::-1].copy()],
            Tolerance(atol=9, mean_atol=9, min_top1_agreement=0.9),
            None,
            "top1_below_floor",
        ),
        ([_logits()[:, ::-1].copy()], LOOSE, np.array([0, 1, 2]), "accuracy_drop"),
    ],
)
def test_parity_failures_are_typed(outputs, tolerance, labels, kind) -> None:
    result = compare_outputs("fp32", [_logits()], outputs, labels, ParityBar(tolerance, 0.01))
    if kind is None:
        assert result.passed, result.failures
    else:
        assert not result.passed and kind in {f.kind for f in result.failures}


def test_report_tables_and_plots_are_written(
    tiny_recipe: Recipe, trained: TrainResult, fp32: ModelArtifact, tmp_path: Path
) -> None:
    import csv

    from onnxforge.bench_report import (
        bench_table,
        plot_accuracy_latency,
        plot_latency,
        write_tables,
    )
    from onnxforge.benchmark import bench_provider, benchmark_inputs
    from onnxforge.records import BenchContenders, ParityResult

    recipe = tiny_recipe.model_copy(
        update={
            "benchmark": tiny_recipe.benchmark.model_copy(
                update={"warmup": 1, "iterations": 5, "rounds": 2, "baseline": False}
            )
        }
    )
    data = data_of(recipe)
    features = benchmark_inputs(data, tmp_path)
    contenders = BenchContenders(trained=trained, artifacts=(fp32,))
    rows = bench_provider(recipe, "CPUExecutionProvider", contenders, features, data)
    parity = [ParityResult(variant="fp32", passed=True, accuracy=0.9, source_accuracy=0.9)]
    table = bench_table(rows, parity)
    csv_path, json_path = write_tables(table, tmp_path / "out")
    with open(csv_path) as handle:
        read = list(csv.DictReader(handle))
    assert [r["batch_size"] for r in read] == ["1", "16"] and read[0]["parity"] == "pass"
    assert json_path.read_text().startswith("[")
    for plot in (
        plot_latency(rows, tmp_path / "out" / "a.png"),
        plot_accuracy_latency(rows, parity, "CPUExecutionProvider", 1, tmp_path / "out" / "b.png"),
    ):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_keras_saved_model_folder_is_exported_and_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxforge.adapters.keras import KerasAdapter

    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")  # the override names a model file
    from onnxforge.adapters.keras_models import keras_cnn

    KerasAdapter().seed(0)
    folder = tmp_path / "saved"
    keras_cnn((8, 8, 1), 10, channels=4, hidden=8).export(str(folder), format="tf_saved_model")
    recipe = load_recipe(
        DEFAULT_RECIPE.parent / "digits_keras.yaml",
        {"model": f"{{framework: keras, file: {folder}}}", "train.enabled": "false"},
    )
    trained = train_model(recipe, tmp_path, lambda *_: None, data_of(recipe))
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data_of(recipe))
    assert fp32.producer.startswith("tf2onnx.convert.from_function")
    (result,) = check_all(recipe, trained.checkpoint, [fp32], data_of(recipe))
    assert result.passed and result.max_abs_err < 1e-4


def test_integer_token_inputs_export_with_named_batch_and_sequence_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxforge.datasets import load_splits
    from onnxforge.variants.int8_dynamic import DynamicSettings

    working_dir = tmp_path / "cwd"
    working_dir.mkdir()
    monkeypatch.chdir(working_dir)
    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")  # the override sets model.kwargs
    small = {
        "model.kwargs": "{vocab_size: 64, d_model: 16, heads: 2, layers: 1, ff: 32}",
        "train.epochs": "1",
        "dataset.samples": "300",
    }
    recipe = load_recipe(DEFAULT_RECIPE.parent / "text_transformer.yaml", small)
    trained = train_model(recipe, tmp_path, lambda *_: None, data_of(recipe))
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data_of(recipe))
    graph_input = onnx.load(fp32.path).graph.input[0]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    # A LayerNormalization graph: parity is checked under the remedy profile too
    results = check_all(recipe, trained.checkpoint, [fp32], data_of(recipe))
    assert [r.profile for r in results] == ["default", "no-skiplayernorm"]
    assert all(r.passed for r in results), [r.failures for r in results]
    # ORT's symbolic shape inference fails on this graph and, unguarded, litters the working
    # directory with sym_shape_infer_temp.onnx and <uuid>.data.
    train = load_splits(recipe.dataset).x_train
    int8 = build_variant("int8-dynamic", fp32, DynamicSettings(), tmp_path, train)
    assert (
        int8.artifact is not None and "without symbolic shape inference" in int8.artifact.producer
    )
    assert list(working_dir.iterdir()) == []


MULTI_OUTPUT = """
import torch
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.classes = nn.Linear(16, 10)
        self.score = nn.Linear(16, 1)

    def forward(self, x):
        hidden = self.body(x)
        return self.classes(hidden), self.score(hidden)
"""


def test_every_output_is_exported_and_held_to_parity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "two_heads.py").write_text(MULTI_OUTPUT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "two_heads")  # the operator's allow-list
    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")  # the override names the module
    recipe = load_recipe(
        DEFAULT_RECIPE, {"model": "{architecture: 'two_heads:TwoHeads'}", "train.epochs": "2"}
    )
    trained = train_model(recipe, tmp_path, lambda *_: None, data_of(recipe))
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data_of(recipe))
    assert [o.name for o in onnx.load(fp32.path).graph.output] == ["output_0", "output_1"]
    (result,) = check_all(recipe, trained.checkpoint, [fp32], data_of(recipe))
    assert result.passed and [o.name for o in result.per_output] == ["output_0", "output_1"]
    assert all(o.max_abs_err < 1e-4 for o in result.per_output)
