"""What the stages need to know about one architecture, one class per architecture (as
Optimum's `OnnxConfig`): whether it trains on regression targets, which recipe kwargs are paths
or weights, and what it checks before any work. Stages ask `architecture_of(model_spec)` and
never test an architecture's name.

Nothing heavy is imported here: a check that needs its framework imports it when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxforge.inputs import Features
    from onnxforge.recipe import ModelSpec

HF_SEQUENCE_CLASSIFIER = "hf_sequence_classifier"


@dataclass(frozen=True)
class ArchitectureConfig:
    """A named architecture with nothing special about it (also: a model file)."""

    name: str
    # The adapter's fit trains it on regression targets (mean squared error, a head sized to
    # the target); otherwise it is trained as a classifier only.
    trains_regression: bool = False

    def recipe_paths(
        self, kwargs: dict[str, Any], resolve: Callable[[Path], Path]
    ) -> dict[str, Any]:
        """The recipe's kwargs with the ones that are paths resolved against its folder."""
        return kwargs

    def weight_inputs(self, kwargs: dict[str, Any]) -> tuple[str, ...]:
        """Files or folders the kwargs name that hold weights: inputs like a checkpoint (they
        count as given weights, and their bytes belong in the stages' cache keys)."""
        return ()

    def check_source(self, model_spec: ModelSpec) -> None:
        """Raise ValueError('model.<field>: ...') when the recipe's model cannot be used."""

    def check_inputs(self, model: Any, features: Features) -> None:
        """Raise ValueError('<field>: ...') when the data does not fit the built model."""


@dataclass(frozen=True)
class ImportedModuleConfig(ArchitectureConfig):
    """`package.module:ClassOrFactory`, a PyTorch module of the user's own (sized by its kwargs,
    so it may be a regression model): the path must resolve to something callable."""

    name: str = "package.module:ClassOrFactory"
    trains_regression: bool = True

    def check_source(self, model_spec: ModelSpec) -> None:
        """The import path resolves, inside the allow-list, to something callable."""
        from onnxforge.adapters.import_paths import import_object

        architecture = str(model_spec.architecture)
        try:
            target = import_object(architecture)
        except ValueError as error:
            raise ValueError(f"model.architecture: {error}") from None
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"model.architecture: cannot import {architecture!r}: "
                f"{type(error).__name__}: {error}"
            ) from None
        if not callable(target):
            raise ValueError(f"model.architecture: {architecture!r} is not callable")


@dataclass(frozen=True)
class HFSequenceClassifierConfig(ArchitectureConfig):
    """A `transformers` *ForSequenceClassification (hf_models.py): built from a config, or
    loaded from a `pretrained` folder, which is a recipe path and holds weights; the data's
    token ids must fit its vocabulary."""

    name: str = HF_SEQUENCE_CLASSIFIER

    def recipe_paths(
        self, kwargs: dict[str, Any], resolve: Callable[[Path], Path]
    ) -> dict[str, Any]:
        """`pretrained` is a recipe path, like model.file and model.checkpoint."""
        folder = kwargs.get("pretrained")
        if isinstance(folder, str):
            return {**kwargs, "pretrained": str(resolve(Path(folder)))}
        return kwargs

    def weight_inputs(self, kwargs: dict[str, Any]) -> tuple[str, ...]:
        """The save_pretrained folder, when the recipe names one."""
        return () if "pretrained" not in kwargs else (str(kwargs["pretrained"]),)

    def check_source(self, model_spec: ModelSpec) -> None:
        """The `transformers` extra, and a config or a local safetensors folder."""
        from onnxforge.adapters.hf_models import check_kwargs

        check_kwargs(model_spec.kwargs, self.name)

    def check_inputs(self, model: Any, features: Features) -> None:
        """Token ids the embedding has a row for."""
        from onnxforge.adapters.hf_models import token_id_problem

        problem = token_id_problem(model, features)
        if problem is not None:
            raise ValueError(problem)


def registry(*configs: ArchitectureConfig) -> Mapping[str, ArchitectureConfig]:
    """Architecture name -> its config, in the order recipes' error messages list them."""
    return {config.name: config for config in configs}


PYTORCH_ARCHITECTURES = registry(
    ArchitectureConfig("small_cnn"),
    ArchitectureConfig("mlp", trains_regression=True),  # sized to the target: a regression head
    ArchitectureConfig("token_transformer"),
    HFSequenceClassifierConfig(),
)
# The Keras adapter compiles a cross-entropy loss: every Keras model trains as a classifier.
KERAS_ARCHITECTURES = registry(
    ArchitectureConfig("keras_cnn"), ArchitectureConfig("keras_cnn_functional")
)
# A model file (model.file) rather than a named architecture.
MODEL_FILE = ArchitectureConfig("model.file")
