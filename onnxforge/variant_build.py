"""Making a variant from its parent: the registry's maker, an atomic write, a record or a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from onnxforge.records import ModelArtifact, VariantBuild, describe_onnx, write_atomically
from onnxforge.variants import VARIANTS


def build_variant(
    name: str, parent: ModelArtifact, settings: BaseModel, out_dir: Path, train_features: np.ndarray
) -> VariantBuild:
    """Write `<name>.onnx` from `parent`, or record the tool's error (never raises)."""
    spec = VARIANTS[name]
    producer = ""

    def write(temp: Path) -> None:
        nonlocal producer
        producer = spec.make(Path(parent.path), settings, temp, train_features)

    try:
        path = write_atomically(out_dir / f"{name}.onnx", write)
    except Exception as error:  # noqa: BLE001 - a variant that cannot be made is a result
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return VariantBuild(
            variant=name, artifact=None, reason=f"made from {parent.variant}: {reason}"
        )
    return VariantBuild(variant=name, artifact=describe_onnx(path, name, parent.variant, producer))
