"""Model inputs as the pipeline passes them: one array, or named arrays for multi-input models.

Every stage goes through these helpers, so a single-input model keeps plain arrays and a
multi-input one keeps a dict of equally long arrays, in the model's input order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Features = np.ndarray | dict[str, np.ndarray]
_SINGLE = "__single__"  # the key a lone array is saved under


def count(features: Features) -> int:
    """Number of samples."""
    return len(next(iter(features.values()))) if isinstance(features, dict) else len(features)


def take(features: Features, index: Any) -> Features:
    """The samples at `index` (a slice or an index array)."""
    if isinstance(features, dict):
        return {name: array[index] for name, array in features.items()}
    return features[index]


def named(features: Features, names: list[str]) -> dict[str, np.ndarray]:
    """A feed dict for `names` (a lone array goes to the first name)."""
    if isinstance(features, dict):
        missing = [name for name in names if name not in features]
        if missing:
            raise KeyError(f"no input data for {missing} (have {list(features)})")
        return {name: np.ascontiguousarray(features[name]) for name in names}
    return {names[0]: np.ascontiguousarray(features)}


def tile(features: Features, batch_size: int) -> Features:
    """`batch_size` samples, the data repeated if there are too few."""
    reps = -(-batch_size // count(features))
    index = np.arange(reps * count(features))[:batch_size] % count(features)
    return take(features, index)


def save(features: Features, path: Path) -> None:
    """Write to .npz (names and order kept)."""
    arrays = features if isinstance(features, dict) else {_SINGLE: features}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load(path: str | Path) -> Features:
    """Read what `save` wrote."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays[_SINGLE] if list(arrays) == [_SINGLE] else arrays


def sample_shape(features: Features) -> tuple[int, ...]:
    """The per-sample shape of the (first) input: what built-in architectures are sized from."""
    first = next(iter(features.values())) if isinstance(features, dict) else features
    return tuple(first.shape[1:])


def describe(features: Features) -> str:
    """Shapes (per sample) and dtypes, for messages."""

    def one(array: np.ndarray) -> str:
        return f"{tuple(array.shape[1:])} {array.dtype}"

    if isinstance(features, dict):
        return ", ".join(f"{name}: {one(array)}" for name, array in features.items())
    return one(features)


def fingerprint_bytes(features: Features) -> list[bytes]:
    """The bytes that identify the data, in a stable order."""
    arrays = features.values() if isinstance(features, dict) else [features]
    return [np.ascontiguousarray(array).tobytes() for array in arrays]
