"""Framework adapters: one module per framework, all with the same small surface.

Stages call `get_adapter(recipe.model.framework)` and never branch on the framework name.
Each adapter module is imported only when a recipe uses it, so TensorFlow or torch load only
where they are needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class AdapterInfo:
    """What the recipe schema needs to know of an adapter without importing its framework."""

    module: str
    architectures: tuple[str, ...]
    exporters: tuple[str, ...]  # the first is the default; the others are fallbacks
    max_opset: int
    import_paths: bool = False  # `package.module:ClassOrFactory` accepted as an architecture
    file_suffixes: tuple[str, ...] = ()  # model files it loads (`model.file`)
    saved_models: bool = False  # `model.file` may be a TensorFlow SavedModel folder
    trainable: bool = True


# Names only: nothing heavy is imported until a recipe uses the adapter.
ADAPTERS: dict[str, AdapterInfo] = {
    "pytorch": AdapterInfo(
        "onnxforge.adapters.pytorch",
        ("small_cnn", "mlp", "token_transformer", "hf_sequence_classifier"),
        ("dynamo", "torchscript"),
        max_opset=23,
        import_paths=True,
    ),
    "keras": AdapterInfo(
        "onnxforge.adapters.keras",
        ("keras_cnn", "keras_cnn_functional"),
        ("tf2onnx",),
        max_opset=18,  # tf2onnx 1.17
        file_suffixes=(".keras",),
        saved_models=True,
    ),
    "onnx": AdapterInfo(
        "onnxforge.adapters.onnx_file",
        (),
        ("copy",),
        max_opset=23,
        file_suffixes=(".onnx",),
        trainable=False,
    ),
}


class FrameworkAdapter(Protocol):
    """What every framework adapter offers the stages."""

    name: str
    checkpoint_suffix: str

    def seed(self, seed: int) -> None:
        """Seed the framework's random number generators."""

    def check_source(self, model_spec: Any) -> None:
        """Raise ValueError('model.<field>: ...') when the model the recipe names cannot be used."""

    def build(self, model_spec: Any, sample_shape: tuple[int, ...], num_classes: int) -> Any:
        """A fresh model with random weights, seeded by the caller."""

    def fit(self, model: Any, splits: Any, train_spec: Any, on_epoch: Callable[..., None]) -> None:
        """Train in place; `on_epoch(epoch, metrics)` after every epoch."""

    def predict(self, model: Any, features: np.ndarray) -> np.ndarray:
        """Raw outputs (logits) for a batch of features."""

    def save_checkpoint(self, model: Any, path: Path) -> None:
        """Write the weights to `path`."""

    def load_checkpoint(self, model: Any, path: Path) -> None:
        """Load weights from `path` into `model`; raises on a mismatch."""

    def export(self, model: Any, example: np.ndarray, export_spec: Any, out_path: Path) -> str:
        """Write an ONNX file; returns the producer (exporter and version) that made it."""

    def set_threads(self, threads: int | None) -> None:
        """Inference thread count; called before the model is built or loaded."""

    def latency_callable(self, model: Any, batch: np.ndarray) -> Callable[[], Any]:
        """A zero-argument call that runs one inference, for the framework baseline."""


def get_adapter(framework: str) -> FrameworkAdapter:
    """The adapter for a framework, imported on first use."""
    return importlib.import_module(ADAPTERS[framework].module).ADAPTER
