"""Adapters own framework and architecture knowledge: every adapter offers the whole typed
surface, and every registered architecture says what the stages ask of it."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

from onnxforge.adapters import ADAPTERS, FrameworkAdapter, architecture_of, get_adapter
from onnxforge.adapters.architectures import MODEL_FILE, ArchitectureConfig
from onnxforge.recipe import ModelSpec
from tests.conftest import REPO

MAX_PARAMETERS = 6  # self and cls not counted


def _protocol_members() -> dict[str, inspect.Signature | None]:
    """Method name -> signature, attribute name -> None, as the Protocol declares them."""
    members: dict[str, inspect.Signature | None] = {
        name: None for name in FrameworkAdapter.__annotations__
    }
    for name, value in vars(FrameworkAdapter).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            members[name] = inspect.signature(value)
    return members


@pytest.mark.parametrize("framework", list(ADAPTERS))
def test_every_adapter_offers_the_whole_surface(framework: str) -> None:
    adapter = get_adapter(framework)
    assert isinstance(adapter, FrameworkAdapter)
    for name, signature in _protocol_members().items():
        assert hasattr(adapter, name), f"{framework} adapter has no {name}"
        if signature is not None:
            own = inspect.signature(getattr(type(adapter), name))
            assert list(own.parameters) == list(signature.parameters), f"{framework}.{name}"
    assert adapter.name == framework


def _spec(framework: str, architecture: str, **kwargs: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"framework": framework, "architecture": architecture, "kwargs": kwargs}
    )


def test_regression_is_known_per_architecture() -> None:
    trains = {
        (framework, name): config.trains_regression
        for framework, info in ADAPTERS.items()
        for name, config in info.architectures.items()
    }
    assert {key for key, regression in trains.items() if regression} == {("pytorch", "mlp")}
    assert ADAPTERS["pytorch"].architecture("package.module:Net").trains_regression  # sized by you
    assert not MODEL_FILE.trains_regression


def test_a_pretrained_folder_is_a_recipe_path_and_a_weight_input(tmp_path: Path) -> None:
    spec = ModelSpec.model_validate(
        {"architecture": "hf_sequence_classifier", "kwargs": {"pretrained": "folder"}},
        context={"base_dir": tmp_path},
    )
    assert spec.kwargs["pretrained"] == str(tmp_path / "folder")
    assert architecture_of(spec).weight_inputs(spec.kwargs) == (str(tmp_path / "folder"),)
    built = _spec("pytorch", "hf_sequence_classifier", model_type="bert")
    assert architecture_of(built).weight_inputs(built.kwargs) == ()
    # another architecture's `pretrained` kwarg is not a path of the recipe's
    other = ModelSpec.model_validate(
        {"architecture": "mlp", "kwargs": {"pretrained": "folder"}}, context={"base_dir": tmp_path}
    )
    assert other.kwargs["pretrained"] == "folder"


def test_an_unknown_architecture_has_no_config() -> None:
    with pytest.raises(KeyError):
        ADAPTERS["keras"].architecture("mlp")
    assert ADAPTERS["onnx"].architecture(None) is MODEL_FILE


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_every_pytorch_architecture_has_a_builder_and_back() -> None:
    from onnxforge.adapters.torch_models import ARCHITECTURES

    assert list(ARCHITECTURES) == list(ADAPTERS["pytorch"].architectures)


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="needs keras")
def test_every_keras_architecture_has_a_builder_and_back() -> None:
    from onnxforge.adapters.keras_models import ARCHITECTURES

    assert list(ARCHITECTURES) == list(ADAPTERS["keras"].architectures)


def test_every_architecture_config_is_one_class_with_the_default_hooks() -> None:
    for info in ADAPTERS.values():
        for name, config in info.architectures.items():
            assert isinstance(config, ArchitectureConfig)
            assert config.name == name


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_the_token_transformer_takes_its_sizes_as_kwargs() -> None:
    from onnxforge.adapters.torch_models import ARCHITECTURES

    model = ARCHITECTURES["token_transformer"]((12,), 3, vocab_size=20, d_model=16, heads=2)
    assert model.embed.num_embeddings == 20
    assert model.head.in_features == 16 and model.head.out_features == 3
    assert len(model.encoder.layers) == 2
    with pytest.raises(TypeError, match="depth"):
        ARCHITECTURES["token_transformer"]((12,), 3, depth=3)


def test_no_adapter_function_takes_more_than_six_parameters() -> None:
    too_many = []
    for path in sorted((REPO / "onnxforge" / "adapters").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len([a for a in named if a not in ("self", "cls")])
                if count > MAX_PARAMETERS:
                    too_many.append(f"{path.name}:{node.lineno} {node.name} takes {count}")
    assert not too_many
