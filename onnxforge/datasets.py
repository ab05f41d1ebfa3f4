"""One loader for every stage: training, calibration, parity and accuracy read the same splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxforge.errors import RecipeError
from onnxforge.inputs import Features, count, fingerprint_bytes, take


@dataclass(frozen=True)
class Splits:
    """Seeded, stratified train / validation / test arrays (features float32, labels int64)."""

    x_train: Features  # one array, or named arrays for a multi-input model
    y_train: np.ndarray | None  # None for synthetic inputs: nothing to train or score against
    x_val: Features
    y_val: np.ndarray | None
    x_test: Features
    y_test: np.ndarray | None

    @property
    def num_classes(self) -> int:
        """Number of distinct labels across all splits (0 without labels)."""
        if self.y_train is None:
            return 0
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max()) + 1)

    def fingerprint(self) -> str:
        """sha256 over every array's bytes, in split order: the dataset hash on registered versions."""
        digest = hashlib.sha256()
        for part in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            if part is not None:
                for chunk in fingerprint_bytes(part):
                    digest.update(chunk)
        return digest.hexdigest()


def _load_sklearn(spec: Any) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{spec.name}")()
    return bunch.data, bunch.target


def _load_npz(spec: Any) -> tuple[Features, np.ndarray]:
    """Named arrays; several feature names make a multi-input dataset (names = model inputs)."""
    names = [spec.features] if isinstance(spec.features, str) else list(spec.features)
    with np.load(spec.path, allow_pickle=False) as archive:
        missing = [key for key in (*names, spec.labels) if key not in archive.files]
        if missing:
            raise RecipeError(
                f"dataset.features/labels: {spec.path} has no array named {missing[0]!r} "
                f"(it has {', '.join(archive.files)})"
            )
        features = {name: archive[name] for name in names}
        labels = archive[spec.labels]
    return (features[names[0]] if isinstance(spec.features, str) else features), labels


def token_majority(spec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Which of `classes` marker tokens occurs most often in the second half of a sequence.

    Markers are sprinkled over the first half too, with a different winner there, so a model
    has to count by position, not just spot or count tokens; the winner leads by exactly one.
    """
    rng = np.random.default_rng(spec.seed)
    markers = np.arange(1, spec.classes + 1)
    half = spec.seq_len // 2
    tokens = rng.integers(spec.classes + 1, spec.vocab_size, size=(spec.samples, spec.seq_len))
    labels = rng.integers(0, spec.classes, size=spec.samples)
    most = half // spec.classes
    for row, label in enumerate(labels):
        for start, winner in (
            (0, (label + rng.integers(1, spec.classes)) % spec.classes),
            (half, label),
        ):
            counts = rng.integers(0, most, size=spec.classes)
            counts[winner] = counts.max() + 1
            slots = start + rng.permutation(half)[: counts.sum()]
            tokens[row, slots] = np.repeat(markers, counts)
    return tokens, labels


def _load_table(spec: Any) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    table = pd.read_csv(spec.path) if spec.source == "csv" else pd.read_parquet(spec.path)
    for field, columns in (("features", spec.features), ("label", [spec.label])):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise RecipeError(
                f"dataset.{field}: {spec.path} has no column {missing[0]!r} "
                f"(it has {', '.join(map(str, table.columns))})"
            )
    return table[spec.features].to_numpy(), table[spec.label].to_numpy()


def _load_synthetic(spec: Any) -> tuple[Features, None]:
    """Seeded random inputs in the declared ranges; integers drawn from [low, high)."""
    rng = np.random.default_rng(spec.seed)
    arrays = {}
    for declared in spec.inputs:
        dims = [spec.dims[d] if isinstance(d, str) else d for d in declared.shape[1:]]
        dtype = np.dtype(declared.dtype)
        if dtype.kind in "iub":
            values = rng.integers(int(declared.low), int(declared.high), size=[spec.samples, *dims])
        else:
            values = rng.uniform(declared.low, declared.high, size=[spec.samples, *dims])
        arrays[declared.name] = values.astype(dtype)
    return (next(iter(arrays.values())) if len(arrays) == 1 else arrays), None


GENERATED_TASKS: dict[str, Callable[[Any], tuple[np.ndarray, np.ndarray]]] = {
    "token_majority": token_majority,
}

LOADERS: dict[str, Callable[[Any], tuple[np.ndarray, np.ndarray]]] = {
    "sklearn": _load_sklearn,
    "npz": _load_npz,
    "generated": lambda spec: GENERATED_TASKS[spec.task](spec),
    "csv": _load_table,
    "parquet": _load_table,
    "synthetic": _load_synthetic,
}


def load_splits(spec: Any) -> Splits:
    """Load the recipe's dataset and cut it into seeded, stratified splits."""
    from sklearn.model_selection import train_test_split

    features, labels = LOADERS[spec.source](spec)
    features = (
        {name: _normalise(np.asarray(array), spec) for name, array in features.items()}
        if isinstance(features, dict)
        else _normalise(np.asarray(features), spec)
    )
    index = np.arange(count(features))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    rest, test = train_test_split(
        index, test_size=spec.test_fraction, random_state=spec.seed, stratify=labels
    )
    train, val = train_test_split(
        rest,
        test_size=spec.val_fraction,
        random_state=spec.seed,
        stratify=None if labels is None else labels[rest],
    )

    def labels_at(part: np.ndarray) -> np.ndarray | None:
        return None if labels is None else labels[part]

    return Splits(
        take(features, train),
        labels_at(train),
        take(features, val),
        labels_at(val),
        take(features, test),
        labels_at(test),
    )


def _normalise(features: np.ndarray, spec: Any) -> np.ndarray:
    """Token ids stay int64; other numbers become float32, divided by `scale`, reshaped."""
    if spec.source == "synthetic":  # already in the declared dtype and shape
        return features
    if np.issubdtype(features.dtype, np.integer):
        features = features.astype(np.int64)
    else:
        features = features.astype(np.float32) / np.float32(getattr(spec, "scale", 1.0))
    if getattr(spec, "sample_shape", None):
        features = features.reshape((len(features), *spec.sample_shape))
    return features
