"""Framework adapters: one module per framework, all with the same small surface.

Stages call `get_adapter(recipe.model.framework)` and never branch on the framework name;
what differs by architecture (regression, weight folders, token checks) is asked of
`architecture_of(recipe.model)` (see architectures.py). Each adapter module is imported only
when a recipe uses it, and imports its framework only inside its methods, so TensorFlow or
torch load only where they are needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from onnxforge.adapters.architectures import (
    KERAS_ARCHITECTURES,
    MODEL_FILE,
    PYTORCH_ARCHITECTURES,
    ArchitectureConfig,
    ImportedModuleConfig,
)

if TYPE_CHECKING:
    from onnxforge.datasets import Splits
    from onnxforge.inputs import Features
    from onnxforge.recipe import ExportSpec, ModelSpec, Recipe, TrainSpec


@dataclass(frozen=True)
class AdapterInfo:
    """What the recipe schema needs to know of an adapter without importing its framework."""

    module: str
    # name -> what stages need to know of it; the names are what `model.architecture` accepts
    architectures: Mapping[str, ArchitectureConfig] = field(hash=False)
    exporters: tuple[str, ...]  # the first is the default; the others are fallbacks
    max_opset: int
    # `package.module:ClassOrFactory` accepted as an architecture, described by this config
    imported: ArchitectureConfig | None = None
    file_suffixes: tuple[str, ...] = ()  # model files it loads (`model.file`)
    saved_models: bool = False  # `model.file` may be a TensorFlow SavedModel folder
    trainable: bool = True
    # export.make_batch_dynamic: the source is an ONNX file whose fixed batch can be rewritten
    rewrites_fixed_batch: bool = False

    @property
    def import_paths(self) -> bool:
        """Whether an import path is accepted as an architecture."""
        return self.imported is not None

    def architecture(self, name: str | None) -> ArchitectureConfig:
        """The config of a registered architecture or import path; a model file's for None."""
        if name is None:
            return MODEL_FILE
        if name in self.architectures:
            return self.architectures[name]
        if self.imported is not None and ":" in name:
            return self.imported
        raise KeyError(f"{name!r} is not an architecture of {self.module}")


# Names only: nothing heavy is imported until a recipe uses the adapter.
ADAPTERS: dict[str, AdapterInfo] = {
    "pytorch": AdapterInfo(
        "onnxforge.adapters.pytorch",
        PYTORCH_ARCHITECTURES,
        ("dynamo", "torchscript"),
        max_opset=23,
        imported=ImportedModuleConfig(),
    ),
    "keras": AdapterInfo(
        "onnxforge.adapters.keras",
        KERAS_ARCHITECTURES,
        ("tf2onnx",),
        max_opset=18,  # tf2onnx 1.17
        file_suffixes=(".keras",),
        saved_models=True,
    ),
    "onnx": AdapterInfo(
        "onnxforge.adapters.onnx_file",
        {},
        ("copy",),
        max_opset=23,
        file_suffixes=(".onnx",),
        trainable=False,
        rewrites_fixed_batch=True,
    ),
}


@runtime_checkable
class FrameworkAdapter(Protocol):
    """What every framework adapter offers the stages."""

    name: str
    checkpoint_suffix: str
    # The framework baseline's benchmark row (and MLflow metric prefix): names what
    # latency_callable times, e.g. pytorch-eager.
    baseline_name: str
    # A fixed input dimension of the source stays fixed in the export (no axes declared).
    keeps_file_shapes: bool

    def seed(self, seed: int) -> None:
        """Seed the framework's random number generators."""

    def check_source(self, model_spec: ModelSpec) -> None:
        """Raise ValueError('model.<field>: ...') when the model the recipe names cannot be used."""

    def check_recipe(self, recipe: Recipe) -> None:
        """Raise ValueError('<field>: ...') when the recipe asks what the model cannot give."""

    def declared_opset(self, model_spec: ModelSpec) -> int | None:
        """The opset a brought file declares (the run's export.opset); None when exported."""

    def build(self, model_spec: ModelSpec, sample_shape: tuple[int, ...], num_classes: int) -> Any:
        """A fresh model with random weights, seeded by the caller."""

    def fit(
        self,
        model: Any,
        splits: Splits,
        train_spec: TrainSpec,
        on_epoch: Callable[[int, dict[str, float]], None],
    ) -> None:
        """Train in place; `on_epoch(epoch, metrics)` after every epoch."""

    def predict(self, model: Any, features: Features) -> list[np.ndarray]:
        """Raw outputs (logits), every output, for a batch of features."""

    def save_checkpoint(self, model: Any, path: Path) -> None:
        """Write the weights to `path`."""

    def load_checkpoint(self, model: Any, path: Path) -> None:
        """Load weights from `path` into `model`; raises on a mismatch."""

    def export(self, model: Any, example: Features, export_spec: ExportSpec, out_path: Path) -> str:
        """Write an ONNX file; returns the producer (exporter and version) that made it."""

    def set_threads(self, threads: int | None) -> None:
        """Inference thread count; called before the model is built or loaded."""

    def latency_callable(self, model: Any, batch: Features) -> Callable[[], object]:
        """A zero-argument call that runs one inference, for the framework baseline."""


def get_adapter(framework: str) -> FrameworkAdapter:
    """The adapter for a framework, imported on first use."""
    return importlib.import_module(ADAPTERS[framework].module).ADAPTER


def architecture_of(model_spec: ModelSpec) -> ArchitectureConfig:
    """What stages need to know of the recipe's model: its architecture's config, the import
    path's, or a model file's."""
    return ADAPTERS[model_spec.framework].architecture(model_spec.architecture)
