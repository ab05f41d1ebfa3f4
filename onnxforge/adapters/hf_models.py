"""`transformers` sequence classifiers as a PyTorch source (the optional `transformers` extra).

Built from a config (random init: kwargs `model_type: bert` plus the config's fields, e.g.
`hidden_size: 128`) or loaded from a local folder written by `save_pretrained` (kwargs
`pretrained: path/to/folder`, relative to the recipe's folder). Nothing is
downloaded (`local_files_only`), no code from the folder runs (`trust_remote_code=False`) and
weights load only from safetensors (a pickled `pytorch_model.bin` can run code when loaded).

Attention is built in its "eager" form: `transformers` defaults to SDPA, which exports as one
fused-looking subgraph that ONNX Runtime's BERT fusions do not match; eager attention exports
as MatMul / Softmax / MatMul, which both fusers (onnxscript's and onnxruntime.transformers')
turn into Attention.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

_MISSING = (
    "model.architecture: hf_sequence_classifier needs the `transformers` extra "
    "(pip install 'onnxforge[transformers]')"
)


class HFSequenceClassifier(nn.Module):
    """A `transformers` *ForSequenceClassification model: token ids (and, when the dataset has
    them, attention_mask and token_type_ids) -> logits."""

    def __init__(self, model: nn.Module, fresh_weights: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model = model
        # Weights a pretrained folder did not provide (a head of another size, or none): random
        # until training fits them.
        self.fresh_weights = fresh_weights

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        given = {name: value for name, value in extra.items() if value is not None}
        return self.model(input_ids=input_ids, **given).logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ValueError(_MISSING) from None
    from onnxforge.chatter import verbose

    if not verbose():
        # transformers logs through a handler of its own, without propagation, so the root
        # handlers' chatter filter never saw its warnings: hand them to the root logger instead.
        transformers.utils.logging.disable_default_handler()
        transformers.utils.logging.enable_propagation()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights: 100%" per build
    return transformers


def check_kwargs(kwargs: dict[str, Any], architecture: str = "hf_sequence_classifier") -> None:
    """Refuse a recipe's kwargs before any work: exactly one of model_type / pretrained, a config
    `transformers` accepts, a folder with config.json and safetensors weights."""
    if ("model_type" in kwargs) == ("pretrained" in kwargs):
        raise ValueError(
            f"model.kwargs: {architecture} needs exactly one of model_type (e.g. bert, with the "
            "config's fields beside it) or pretrained (a local folder written by save_pretrained)"
        )
    attention = kwargs.get("attn_implementation", "eager")
    if attention not in ("eager", "sdpa"):
        raise ValueError(
            f"model.kwargs.attn_implementation: expected eager (what ONNX Runtime's fusions "
            f"match) or sdpa; got {attention!r}"
        )
    transformers = _transformers()
    if "model_type" in kwargs:
        _config(transformers, _config_fields(kwargs), 2)
        return
    extra = set(kwargs) - {"pretrained", "attn_implementation"}
    if extra:
        raise ValueError(
            f"model.kwargs: {sorted(extra)} are config fields; with pretrained the folder's "
            "config.json is used, so give only pretrained (and attn_implementation)"
        )
    folder = Path(str(kwargs["pretrained"]))
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.kwargs.pretrained: {folder} has no config.json; expected a folder written "
            "by save_pretrained"
        )
    if not any(folder.glob("*.safetensors")):
        raise ValueError(
            f"model.kwargs.pretrained: {folder} has no *.safetensors weights; pickled weights "
            "(pytorch_model.bin) can run code when loaded and are refused"
        )


def _config_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "attn_implementation"}


def _config(transformers: Any, fields: dict[str, Any], num_labels: int) -> Any:
    """AutoConfig for `model_type` with the other fields; an unknown model_type is refused."""
    model_type = str(fields["model_type"])
    if model_type not in transformers.CONFIG_MAPPING:
        raise ValueError(
            f"model.kwargs.model_type: {model_type!r} is not a model type of transformers "
            f"{transformers.__version__}; expected e.g. bert, roberta, distilbert"
        )
    rest = {k: v for k, v in fields.items() if k != "model_type"}
    if "num_labels" in rest:
        raise ValueError(
            "model.kwargs.num_labels: the head's size comes from the data's classes; "
            "leave num_labels out"
        )
    # transformers keeps an unknown field as a plain attribute: a misspelled num_hidden_layer
    # would silently build BERT's default 12 layers.
    config_class = transformers.CONFIG_MAPPING[model_type]
    known = [*vars(config_class()), *getattr(config_class, "attribute_map", {})]
    unknown = sorted(set(rest) - set(known))
    if unknown:
        close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hints = ", ".join(f"{k} (did you mean {m[0]}?)" if m else k for k, m in close.items())
        raise ValueError(f"model.kwargs: {model_type} configs have no field {hints}")
    try:
        return transformers.AutoConfig.for_model(model_type, num_labels=max(num_labels, 1), **rest)
    except (ValueError, TypeError) as error:
        raise ValueError(f"model.kwargs: {model_type} config refused: {error}") from None


def hf_sequence_classifier(
    sample_shape: tuple[int, ...],
    num_classes: int,
    pretrained: str | None = None,
    attn_implementation: str = "eager",
    **config: Any,
) -> HFSequenceClassifier:
    """The recipe's classifier; `num_classes` outputs (1 for a regression head)."""
    transformers = _transformers()
    auto = transformers.AutoModelForSequenceClassification
    labels = max(num_classes, 1)
    if pretrained is None:
        model = auto.from_config(
            _config(transformers, config, labels), attn_implementation=attn_implementation
        )
    else:
        model, info = auto.from_pretrained(
            str(pretrained),
            num_labels=labels,
            # a folder saved with another head size gets a fresh head, which training fits
            ignore_mismatched_sizes=True,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            attn_implementation=attn_implementation,
            output_loading_info=True,
        )
        fresh = [*info.get("missing_keys", ()), *(m[0] for m in info.get("mismatched_keys", ()))]
        return HFSequenceClassifier(model, tuple(sorted(map(str, fresh))))
    return HFSequenceClassifier(model)


def token_id_problem(model: HFSequenceClassifier, features: Any) -> str | None:
    """Token ids the embedding has no row for (vocab_size too small for the data) fail deep in
    torch as "index out of range in self": say which field and which ids instead."""
    import numpy as np

    ids = features.get("input_ids") if isinstance(features, dict) else features
    if ids is None or np.size(ids) == 0 or not np.issubdtype(np.asarray(ids).dtype, np.integer):
        return None
    vocab_size = int(model.model.config.vocab_size)
    largest = int(np.max(ids))
    if largest < vocab_size and int(np.min(ids)) >= 0:
        return None
    return (
        f"model.kwargs.vocab_size: the model has {vocab_size} token ids (0-{vocab_size - 1}) but "
        f"the dataset's input ids go from {int(np.min(ids))} to {largest}"
    )
