"""`transformers` models as a PyTorch source: a save_pretrained folder loads as it was saved,
pickled weights and bad kwargs are refused before any work, and an int8 variant can quantize
ort-optimized's fused graph (the recipe refuses a source it does not build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onnxforge.cache import train_key
from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from onnxforge.recipe import load_recipe
from onnxforge.variants import buildable_from
from onnxforge.variants.int8_dynamic import DynamicSettings
from tests.conftest import REPO

transformers = pytest.importorskip("transformers", reason="the `transformers` extra")

from onnxforge.adapters.hf_models import check_kwargs, hf_sequence_classifier  # noqa: E402

RECIPE = REPO / "configs" / "hf_bert.yaml"
TINY = {
    "vocab_size": 40,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}


def _saved_bert(folder: Path, safetensors: bool = True) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    config = transformers.BertConfig(num_labels=3, **TINY)
    model = transformers.BertForSequenceClassification(config).eval()
    if safetensors:
        model.save_pretrained(folder)
    else:  # what an old checkpoint folder holds: config.json and a pickled state_dict
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder, model


def test_a_save_pretrained_folder_loads_with_its_weights(tmp_path: Path) -> None:
    folder, original = _saved_bert(tmp_path)
    loaded = hf_sequence_classifier((16,), 3, pretrained=str(folder)).eval()
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 40, size=(4, 16)))
    with torch.inference_mode():
        expected = original(input_ids=tokens).logits
        assert torch.allclose(loaded(tokens), expected, atol=1e-5)
    assert loaded.model.config._attn_implementation == "eager"  # what the fusions match


def test_pickled_weights_are_refused_before_loading(tmp_path: Path) -> None:
    folder, _ = _saved_bert(tmp_path, safetensors=False)
    with pytest.raises(ValueError, match=r"model.kwargs.pretrained: .* no \*.safetensors"):
        check_kwargs({"pretrained": str(folder)})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "exactly one of model_type"),
        ({"model_type": "bert", "pretrained": "x"}, "exactly one of model_type"),
        ({"model_type": "not-a-model"}, "model.kwargs.model_type: 'not-a-model' is not"),
        ({"pretrained": "/nonexistent/folder"}, "model.kwargs.pretrained: .* no config.json"),
        (
            {"model_type": "bert", "num_hidden_layer": 8},
            r"bert configs have no field num_hidden_layer \(did you mean num_hidden_layers\?\)",
        ),
        ({"model_type": "bert", "num_labels": 3}, "model.kwargs.num_labels: .* leave num_labels"),
        (
            {"model_type": "bert", "attn_implementation": "kernels-community/flash-attn"},
            "model.kwargs.attn_implementation: expected eager",
        ),
    ],
)
def test_bad_kwargs_are_refused(kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        check_kwargs(kwargs)


def test_a_bad_model_type_stops_the_preflight_naming_the_field(tmp_path: Path) -> None:
    text = RECIPE.read_text().replace("model_type: bert", "model_type: bertt")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(
        RecipeError, match=r"recipe.yaml:\d+: model.kwargs.model_type: 'bertt' is not"
    ):
        load_and_check(str(path))


def test_int8_quantizes_the_fused_graph_when_asked() -> None:
    fused = DynamicSettings(source="ort-optimized")
    built = {"fp32", "simplified", "ort-optimized"}
    assert buildable_from("int8-dynamic", built) == "simplified"  # the default
    assert buildable_from("int8-dynamic", built, fused) == "ort-optimized"
    # ort-optimized failed to build: its own nearest built ancestor (the raw export)
    assert buildable_from("int8-dynamic", {"fp32", "simplified"}, fused) == "fp32"


def test_a_source_the_recipe_does_not_build_is_refused() -> None:
    variants = "{simplified: {}, int8-dynamic: {source: ort-optimized}}"
    with pytest.raises(Exception, match=r"variants.int8-dynamic.source: 'ort-optimized' is not"):
        load_recipe(RECIPE, {"variants": variants})


def test_a_relative_pretrained_folder_is_read_from_the_recipes_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**TINY, "vocab_size": 64, "max_position_embeddings": 64}
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(num_labels=4, **config)
    )
    model.save_pretrained(tmp_path / "bert")
    text = RECIPE.read_text()
    start = text.index("  kwargs:")
    path = tmp_path / "recipe.yaml"
    # the folder's weights as they are: no checkpoint needed
    kwargs = "  kwargs: {pretrained: bert}\n\ntrain: {enabled: false}\n"
    path.write_text(text[:start] + kwargs + text[text.index("export:") :])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_and_check(str(path))  # builds it and runs samples through it
    assert recipe.model.kwargs["pretrained"] == str(tmp_path / "bert")

    # the folder's weights are an input of training's cache key, like a checkpoint
    before = train_key(recipe, "data")
    model.classifier.bias.data += 1
    model.save_pretrained(tmp_path / "bert")
    assert train_key(recipe, "data") != before


def test_a_folder_whose_head_does_not_fit_is_refused_untrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head for 3 classes on 4-class data gets fresh random weights: fine when training fits
    them, refused before any work when train.enabled is false (it would register a random head)."""
    config = {**TINY, "vocab_size": 64, "max_position_embeddings": 64}
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(
        transformers.BertConfig(num_labels=3, **config)
    ).save_pretrained(tmp_path / "bert")
    assert hf_sequence_classifier((16,), 3, pretrained=str(tmp_path / "bert")).fresh_weights == ()
    fresh = hf_sequence_classifier((16,), 4, pretrained=str(tmp_path / "bert")).fresh_weights
    assert "classifier.weight" in fresh and "classifier.bias" in fresh
    text = RECIPE.read_text()
    start = text.index("  kwargs:")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        text[:start]
        + "  kwargs: {pretrained: bert}\n\ntrain: {enabled: false}\n"
        + text[text.index("export:") :]
    )
    with pytest.raises(RecipeError, match=r"model.kwargs.pretrained: .*classifier.* train.enabled"):
        load_and_check(str(path))


def test_a_vocabulary_smaller_than_the_data_is_refused_naming_vocab_size(tmp_path: Path) -> None:
    text = RECIPE.read_text()
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace("    vocab_size: 64", "    vocab_size: 32", 1))  # the model's
    assert "    vocab_size: 32" in path.read_text()
    with pytest.raises(RecipeError, match=r"model.kwargs.vocab_size: the model has 32 token ids"):
        load_and_check(str(path))
