"""Bad recipes fail before any work, with one line naming the file, the field and the expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from tests.conftest import REPO
from tests.recipe_files import at, write_recipe

CASES = [
    (
        "unknown key",
        {"train.epoch": 3},
        "train.epoch: unknown key; expected one of enabled, epochs, batch_size, learning_rate, "
        "seed, threads",
        "epoch: 3",
    ),
    (
        "wrong type",
        {"train.epochs": "many"},
        "train.epochs: Input should be a valid integer (got 'many')",
        "epochs: many",
    ),
    (
        "missing data file",
        {"dataset": {"source": "npz", "path": "data/missing.npz"}},
        "dataset.path: file not found: {dir}/data/missing.npz",
        "path: data/missing.npz",
    ),
    (
        "missing checkpoint",
        {"model.checkpoint": "weights/none.pt"},
        "model.checkpoint: file not found: {dir}/weights/none.pt",
        "checkpoint: weights/none.pt",
    ),
    (
        "unknown provider",
        {"benchmark.providers": ["CPUExecutionProvider", "FooExecutionProvider"]},
        "benchmark.providers[1]: expected one of CPUExecutionProvider, CUDAExecutionProvider, "
        "TensorrtExecutionProvider, OpenVINOExecutionProvider, DmlExecutionProvider, "
        "CoreMLExecutionProvider; got 'FooExecutionProvider'",
        "- FooExecutionProvider",
    ),
    (
        "unknown architecture",
        {"model.architecture": "resnet9000"},
        "model.architecture: expected one of small_cnn, mlp, token_transformer, hf_sequence_classifier, "
        "package.module:ClassOrFactory for pytorch; got 'resnet9000'",
        "architecture: resnet9000",
    ),
    (
        "objective on a provider not benchmarked",
        {"register.objective.batch_size": 4},
        "register.objective.batch_size: 4 is not in benchmark.batch_sizes [1, 16]",
        "batch_size: 4",
    ),
    (
        "unknown variant tolerance",
        {"parity.tolerances": {"int4": {"atol": 1, "mean_atol": 1, "min_top1_agreement": 0.5}}},
        "parity.tolerances: unknown variant 'int4'; expected one of fp32, simplified, ort-optimized, "
        "int8-dynamic, int8-static, fp16",
        "tolerances:",
    ),
    ("missing section", {"register": None}, "register: required field is missing", None),
    (
        "opset tf2onnx cannot write",
        {"model.framework": "keras", "model.architecture": "keras_cnn", "export.opset": 19},
        "export.opset: keras models are exported with tf2onnx, which writes opset <= 18; got 19",
        "opset: 19",
    ),
    (
        "exporter of another framework",
        {"export.exporter": "tf2onnx"},
        "export.exporter: expected one of dynamo, torchscript for pytorch; got 'tf2onnx'",
        "exporter: tf2onnx",
    ),
    (
        "int8 source that is not built",
        {"variants.ort-optimized": None, "variants.int8-dynamic.source": "ort-optimized"},
        "variants.int8-dynamic.source: 'ort-optimized' is not among the recipe's variants "
        "(simplified, int8-dynamic, int8-static, fp16); add it, or leave source out",
        "source: ort-optimized",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_schema_errors_name_file_line_field_and_expectation(
    tmp_path: Path, change: dict[str, Any], expected: str, needle: str | None
) -> None:
    path = write_recipe(tmp_path, change)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    where = at(path, needle) if needle else str(path)
    assert str(caught.value) == f"{where}: " + expected.format(dir=tmp_path)


def test_npz_missing_named_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", pixels=np.zeros((40, 64)), y=np.arange(40) % 2)
    path = write_recipe(tmp_path, {"dataset": {"source": "npz", "path": "data.npz"}})
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value) == (
        f"{path}: dataset.features/labels: {tmp_path / 'data.npz'} has no array named 'x' "
        "(it has pixels, y)"
    )


def test_checkpoint_that_does_not_fit_the_architecture(tmp_path: Path) -> None:
    import torch

    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    path = write_recipe(tmp_path, {"model.checkpoint": "other.pt"})
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    message = str(caught.value)
    assert message.startswith(
        f"{at(path, 'checkpoint:')}: model.checkpoint: {tmp_path / 'other.pt'} does not fit "
        "model 'small_cnn': "
    )
    assert "\n" not in message


def test_samples_that_do_not_fit_the_model(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, {"dataset.sample_shape": [64]})
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value).startswith(
        f"{path}: model.kwargs / dataset.sample_shape: cannot build 'small_cnn' with "
        "{'channels': 16, 'hidden': 64} for samples (64,) float32: "
    )


def test_cli_exits_2_with_one_line_and_does_no_work(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, {"benchmark.providers": ["NopeExecutionProvider"]})
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ONNXFORGE_HOME": str(state)},
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {at(path, '- Nope')}: benchmark.providers[0]: expected one of CPUExecutionProvider, "
        "CUDAExecutionProvider, TensorrtExecutionProvider, OpenVINOExecutionProvider, "
        "DmlExecutionProvider, CoreMLExecutionProvider; got 'NopeExecutionProvider'"
    ]
    assert not state.exists(), "a refused recipe must not create any state"


def test_bad_override_syntax_is_refused() -> None:
    from onnxforge.recipe import parse_overrides

    with pytest.raises(RecipeError, match="expected key=value"):
        parse_overrides(["train.epochs"])


def test_import_path_that_does_not_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "no_such_package")
    path = write_recipe(tmp_path, {"model.architecture": "no_such_package.models:Net"})
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value) == (
        f"{at(path, 'architecture:')}: model.architecture: cannot import "
        "'no_such_package.models:Net': "
        "ModuleNotFoundError: No module named 'no_such_package'"
    )


def test_checkpoint_that_does_not_fit_the_named_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.byo_fixtures import torch_module

    checkpoint = torch_module(tmp_path, hidden=32)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "byo_models")
    change = {
        "model.architecture": "byo_models:TinyNet",
        "model.kwargs": {"hidden": 16},
        "model.checkpoint": str(checkpoint),
        "train.enabled": False,
    }
    path = write_recipe(tmp_path, change)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value).startswith(
        f"{at(path, 'checkpoint:')}: model.checkpoint: {checkpoint} does not fit model "
        "'byo_models:TinyNet': "
    )


def _onnx_recipe(folder: Path, model_file: Path) -> Path:
    return write_recipe(
        folder,
        {
            "model": {"framework": "onnx", "file": str(model_file)},
            "train.enabled": False,
            "export.exporter": None,
        },
    )


def test_truncated_onnx_file(tmp_path: Path) -> None:
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path, external_data=False)
    model_file.write_bytes(model_file.read_bytes()[:200])
    path = _onnx_recipe(tmp_path, model_file)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value).startswith(
        f"{at(path, 'file:')}: model.file: {model_file} is not a readable ONNX model: "
    )


def test_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    import onnx

    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path)
    proto = onnx.load(str(model_file), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere/weights.data"
    onnx.save(proto, str(model_file))
    path = _onnx_recipe(tmp_path, model_file)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    message = str(caught.value)
    assert message.startswith(f"{at(path, 'file:')}: model.file: {model_file}: tensor ")
    assert f"outside the model's folder {tmp_path}" in message


def test_an_onnx_model_cannot_be_trained(tmp_path: Path) -> None:
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path)
    path = write_recipe(
        tmp_path, {"model": {"framework": "onnx", "file": str(model_file)}, "export.exporter": None}
    )
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert (
        str(caught.value)
        == f"{at(path, 'train:')}: train.enabled: onnx models cannot be trained; set it to false"
    )


def test_table_file_missing_a_named_column(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"a": [0.0] * 40, "b": [1.0] * 40, "target": [0, 1] * 20}).to_csv(
        tmp_path / "data.csv", index=False
    )
    dataset = {"source": "csv", "path": "data.csv", "features": ["a", "c"], "label": "target"}
    path = write_recipe(
        tmp_path, {"dataset": dataset, "model.architecture": "mlp", "model.kwargs": {}}
    )
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value) == (
        f"{at(path, 'features:')}: dataset.features: {tmp_path / 'data.csv'} has no column 'c' "
        "(it has a, b, target)"
    )


def test_synthetic_spec_that_does_not_match_the_model(tmp_path: Path) -> None:
    from tests.byo_fixtures import onnx_file

    model_file = onnx_file(tmp_path)
    dataset = {"source": "synthetic", "inputs": [{"name": "input", "shape": ["batch", 64]}]}
    path = write_recipe(
        tmp_path,
        {
            "model": {"framework": "onnx", "file": str(model_file)},
            "train.enabled": False,
            "export.exporter": None,
            "dataset": dataset,
        },
    )
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    message = str(caught.value)
    assert message.startswith(
        f"{at(path, 'dataset:')}: dataset: samples (64,) float32 do not fit model "
    )
    assert "\n" not in message


def test_synthetic_spec_needs_values_for_its_symbolic_dims(tmp_path: Path) -> None:
    dataset = {"source": "synthetic", "inputs": [{"name": "ids", "shape": ["batch", "sequence"]}]}
    path = write_recipe(tmp_path, {"dataset": dataset, "train.enabled": False})
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    assert str(caught.value) == (
        f"{at(path, 'shape:')}: dataset.inputs[0].shape: symbolic dimension 'sequence' needs a "
        "value in dataset.dims"
    )


def test_int8_without_simplified_quantizes_what_is_there(tmp_path: Path) -> None:
    """The default source (simplified) is no requirement: int8 alone quantizes the export."""
    path = write_recipe(tmp_path, {"variants": {"int8-dynamic": {}}})
    recipe = load_and_check(str(path))
    assert [name for name, _ in recipe.requested_variants()] == ["int8-dynamic"]
