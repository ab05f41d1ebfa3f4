"""Framework adapters: one module per framework, all with the same small surface.

Stages call `get_adapter(recipe.model.framework)` and never branch on the framework name.
Each adapter module is imported only when a recipe uses it, so TensorFlow or torch load only
where they are needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# framework -> (adapter module, architectures it can build); names only, nothing heavy imported.
_ADAPTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pytorch": ("onnxforge.adapters.pytorch", ("small_cnn", "mlp", "token_transformer")),
}


class FrameworkAdapter(Protocol):
    """What every framework adapter offers the stages."""

    name: str

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

    def latency_callable(
        self, model: Any, batch: np.ndarray, threads: int | None
    ) -> Callable[[], Any]:
        """A zero-argument call that runs one inference, for the framework baseline."""


def architecture_names() -> list[str]:
    """Every architecture any adapter can build."""
    return [name for _, names in _ADAPTERS.values() for name in names]


def get_adapter(framework: str) -> FrameworkAdapter:
    """The adapter for a framework, imported on first use."""
    module_name, _ = _ADAPTERS[framework]
    return importlib.import_module(module_name).ADAPTER
