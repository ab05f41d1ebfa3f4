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
    for column in spec.features:
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise RecipeError(
                f"dataset.features: {spec.path} column {column!r} holds {table[column].dtype} "
                "values; expected numbers"
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

    with np.errstate(over="ignore"):  # an overflow to inf is refused by check_features below
        features, labels = LOADERS[spec.source](spec)
        features = (
            {name: _normalise(np.asarray(array), spec) for name, array in features.items()}
            if isinstance(features, dict)
            else _normalise(np.asarray(features), spec)
        )
    check_features(features, spec)
    index = np.arange(count(features))
    if labels is not None:
        labels = checked_labels(labels, spec)
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


def _feature_source(spec: Any, name: str | None, position: np.ndarray, shape: tuple) -> str:
    """Where a feature value came from: the file and array or column, or the generator."""
    if spec.source in ("csv", "parquet"):  # (rows, columns), maybe reshaped to sample_shape
        flat = int(np.ravel_multi_index(tuple(position[1:]), shape[1:])) if len(shape) > 1 else 0
        return f"{spec.path} column {spec.features[flat]!r}"
    if spec.source == "npz":
        return f"{spec.path} array {name or spec.features!r}"
    if spec.source == "synthetic":
        return f"synthetic input {name or spec.inputs[0].name!r} (check its low/high and dtype)"
    if spec.source == "sklearn":
        return f"scikit-learn dataset {spec.name!r}"
    return f"generated task {spec.task!r}"


def check_features(features: Features, spec: Any) -> None:
    """Refuse NaN or infinite feature values (after scaling), naming the file and array/column."""
    arrays = features.items() if isinstance(features, dict) else [(None, features)]
    for name, array in arrays:
        if array.dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(array)
        if not bad.any():
            continue
        position = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(array[tuple(position)]) else "an infinite value"
        rows = int(bad.reshape(len(bad), -1).any(axis=1).sum())
        field = "dataset.inputs" if spec.source == "synthetic" else "dataset.features"
        raise RecipeError(
            f"{field}: {_feature_source(spec, name, position, array.shape)} has {what} at "
            f"sample {int(position[0])} ({rows} sample(s) in all); expected finite numbers"
        )


def checked_labels(labels: Any, spec: Any) -> np.ndarray:
    """Class ids as int64; NaN, infinite, fractional, negative or non-numeric labels refused."""
    raw = np.asarray(labels)
    if spec.source == "npz":
        field, where = "dataset.labels", f"{spec.path} array {spec.labels!r}"
    elif spec.source in ("csv", "parquet"):
        field, where = "dataset.label", f"{spec.path} column {spec.label!r}"
    else:
        field, where = "dataset", "the labels"
    expected = "expected integer class ids 0, 1, 2, ..."
    if raw.dtype.kind not in "iubf":
        raise RecipeError(f"{field}: {where} holds {raw.dtype} values; {expected}")
    with np.errstate(invalid="ignore"):  # NaN compares False; it is caught first anyway
        checks = [(raw < 0, "a negative label")]
        if raw.dtype.kind == "f":
            checks = [
                (~np.isfinite(raw), "a NaN or infinite label"),
                (raw != np.round(raw), "a fractional label"),
                *checks,
            ]
    for bad, what in checks:
        if bad.any():
            sample = int(np.argwhere(bad)[0][0])
            value = raw.reshape(len(raw), -1)[sample][0].item()
            raise RecipeError(
                f"{field}: {where} has {what} ({value!r}) at sample {sample}; {expected}"
            )
    return raw.astype(np.int64)
