"""One loader for every stage: training, calibration, parity and accuracy read the same splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxforge.errors import RecipeError
from onnxforge.inputs import Features, count, fingerprint_bytes, take
from onnxforge.scoring import task_of

# scikit-learn sets whose target is continuous (diabetes: disease progression 25..346, stored as
# whole numbers in float64, so the values alone would read as class ids)
SKLEARN_REGRESSION = frozenset({"diabetes"})
# seeds NumPy, scikit-learn and the frameworks accept: 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Splits:
    """Seeded train / validation / test arrays (features float32 or int64 token ids; labels int64
    class ids, float32 regression targets, or None)."""

    x_train: Features  # one array, or named arrays for a multi-input model
    y_train: np.ndarray | None  # None without labels: nothing to train or score against
    x_val: Features
    y_val: np.ndarray | None
    x_test: Features
    y_test: np.ndarray | None

    @property
    def task(self) -> str:
        """classification, regression or none, read from the labels' dtype (as stored)."""
        return task_of(self.y_train)

    @property
    def num_classes(self) -> int:
        """Number of class ids across all splits (0 for regression or without labels)."""
        if self.task != "classification":
            return 0
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max()) + 1)

    @property
    def output_size(self) -> int:
        """Values per sample a built-in architecture outputs: class scores, or regression
        targets (1 for a (N,) target)."""
        if self.task == "regression":
            return int(np.prod(self.y_train.shape[1:], dtype=np.int64))
        return self.num_classes

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


def _load_npz(spec: Any) -> tuple[Features, np.ndarray | None]:
    """Named arrays; several feature names make a multi-input dataset (names = model inputs).

    `labels` omitted reads the array `y` when the file has one and means no labels otherwise;
    a name the recipe sets must exist; `labels: null` means no labels.
    """
    names = [spec.features] if isinstance(spec.features, str) else list(spec.features)
    with _npz_archive(spec.path) as archive:
        label_name = spec.labels
        if "labels" not in spec.model_fields_set and label_name not in archive.files:
            label_name = None
        wanted = [*names, label_name] if label_name is not None else names
        missing = [key for key in wanted if key not in archive.files]
        if missing:
            raise RecipeError(
                f"dataset.features/labels: {spec.path} has no array named {missing[0]!r} "
                f"(it has {', '.join(archive.files)})"
            )
        features = {name: _npz_array(archive, name, spec, "features") for name in names}
        labels = None if label_name is None else _npz_array(archive, label_name, spec, "labels")
    return (features[names[0]] if isinstance(spec.features, str) else features), labels


_NPZ_EXPECTED = "expected a .npz archive written by numpy.savez or numpy.savez_compressed"


def _npz_archive(path: Any) -> Any:
    """np.load of a .npz file; RecipeError naming the file when it is not a readable archive."""
    import zipfile

    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as error:
        raise RecipeError(
            f"dataset.path: cannot read {path} ({error.strerror or error}); {_NPZ_EXPECTED}"
        ) from None
    except EOFError:
        raise RecipeError(f"dataset.path: {path} is empty; {_NPZ_EXPECTED}") from None
    except (ValueError, zipfile.BadZipFile) as error:
        # np.load reads anything that is neither a zip nor .npy as a pickle, which it refuses
        reason = "not a zip archive" if "pickle" in str(error) else _first_line(error)
        raise RecipeError(
            f"dataset.path: {path} is not a readable .npz archive ({reason}); {_NPZ_EXPECTED}"
        ) from None
    if not hasattr(archive, "files"):  # a single .npy array
        raise RecipeError(
            f"dataset.path: {path} holds one .npy array, not named arrays; {_NPZ_EXPECTED}"
        )
    return archive


def _npz_array(archive: Any, name: str, spec: Any, field: str) -> np.ndarray:
    """One array of an open .npz archive; RecipeError naming the file and the array when its
    member is truncated, corrupt or holds pickled objects."""
    import zipfile

    try:
        return archive[name]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        reason = (
            "it holds Python objects, which are not loaded (no pickles); expected numeric arrays"
            if "allow_pickle" in str(error)
            else f"it is truncated or corrupt ({_first_line(error)}); {_NPZ_EXPECTED}"
        )
        raise RecipeError(f"dataset.{field}: {spec.path} array {name!r}: {reason}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


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


def _load_table(spec: Any) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    table = _read_table(spec)
    label_columns = [] if spec.label is None else [spec.label]
    for field, columns in (("features", spec.features), ("label", label_columns)):
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
    labels = None if spec.label is None else table[spec.label].to_numpy()
    return table[spec.features].to_numpy(), labels


def _read_table(spec: Any) -> Any:
    """The .csv or .parquet file as a DataFrame; RecipeError naming the file when it is empty,
    binary, ragged or otherwise unreadable, or has no data rows."""
    import re

    import pandas as pd

    kind = "CSV" if spec.source == "csv" else "Parquet"
    expected = (
        "expected comma-separated text with a header row naming the columns"
        if spec.source == "csv"
        else "expected a Parquet file (e.g. written by pandas.DataFrame.to_parquet)"
    )
    path = spec.path
    if spec.source == "csv":
        try:
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
        except OSError as error:
            raise RecipeError(
                f"dataset.path: cannot read {path} ({error.strerror or error}); {expected}"
            ) from None
        nul = head.find(b"\0")
        if nul >= 0:
            raise RecipeError(
                f"dataset.path: {path} holds binary data (a NUL byte at offset {nul}), not CSV "
                f"text; {expected}"
            )
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 3:  # not a character cut at the end of the read
                raise RecipeError(
                    f"dataset.path: {path} is not UTF-8 text (byte 0x{head[error.start]:02x} at "
                    f"offset {error.start}); {expected}"
                ) from None
    try:
        table = pd.read_csv(path) if spec.source == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise RecipeError(f"dataset.path: {path} is empty; {expected}") from None
    except pd.errors.ParserError as error:
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        reason = (
            f"line {ragged[2]} has {ragged[3]} fields where the rows before it have {ragged[1]}"
            if ragged
            else _first_line(error)
        )
        raise RecipeError(
            f"dataset.path: {path} is not a well-formed CSV table: {reason}; {expected}"
        ) from None
    except UnicodeDecodeError:  # past the part read above
        raise RecipeError(f"dataset.path: {path} is not UTF-8 text; {expected}") from None
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise RecipeError(
            f"dataset.path: {path} is not a readable {kind} file ({_first_line(error)}); {expected}"
        ) from None
    if table.empty:
        raise RecipeError(
            f"dataset.path: {path} has no data rows; {expected}, then one row per sample"
        )
    return table


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
    """Load the recipe's dataset and cut it into seeded splits (stratified by class for
    classification; plain seeded shuffles for regression and label-free data)."""
    from sklearn.model_selection import train_test_split

    check_seed("dataset.seed", spec.seed)
    with np.errstate(over="ignore"):  # an overflow to inf is refused by check_features below
        features, labels = LOADERS[spec.source](spec)
        features = (
            {name: _normalise(np.asarray(array), spec, name) for name, array in features.items()}
            if isinstance(features, dict)
            else _normalise(np.asarray(features), spec)
        )
    check_features(features, spec)
    _check_lengths(features, labels, spec)
    index = np.arange(count(features))
    task = inferred_task(spec, labels)
    labels = None if task == "none" else checked_labels(labels, spec, task)
    stratify = labels if task == "classification" else None
    if stratify is not None:
        _check_stratifiable(stratify, spec)
    rest, test = train_test_split(
        index, test_size=spec.test_fraction, random_state=spec.seed, stratify=stratify
    )
    train, val = train_test_split(
        rest,
        test_size=spec.val_fraction,
        random_state=spec.seed,
        stratify=None if stratify is None else stratify[rest],
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


def check_seed(field: str, seed: int) -> None:
    """Refuse a seed outside 0..SEED_MAX (NumPy's and scikit-learn's range)."""
    if not 0 <= seed <= SEED_MAX:
        raise RecipeError(f"{field}: expected an integer 0..{SEED_MAX} (2**32 - 1); got {seed}")


def _check_lengths(features: Features, labels: Any, spec: Any) -> None:
    """Every named feature array and the labels have one entry per sample."""
    arrays = features if isinstance(features, dict) else {None: features}
    counts = {name: _length(array) for name, array in arrays.items()}
    first, samples = next(iter(counts.items()))
    for name, length in counts.items():
        if length != samples:
            raise RecipeError(
                f"dataset.features: {spec.path} array {name!r} has {length} samples, but array "
                f"{first!r} has {samples}; expected one entry per sample in every array"
            )
    if labels is not None and _length(labels) != samples:
        field, where = _label_source(spec)
        raise RecipeError(
            f"{field}: {where} has {_length(labels)} labels, but the features have {samples} "
            "samples; expected one label per sample"
        )


def _length(array: Any) -> int:
    """Entries along dimension 0 (0 for a single value)."""
    return int(np.shape(array)[0]) if np.ndim(array) else 0


def _normalise(features: np.ndarray, spec: Any, name: str | None = None) -> np.ndarray:
    """Token ids stay int64; other numbers become float32, divided by `scale`, reshaped."""
    if spec.source == "synthetic":  # already in the declared dtype and shape
        return features
    if np.issubdtype(features.dtype, np.integer):
        features = features.astype(np.int64)
    else:
        features = features.astype(np.float32) / np.float32(getattr(spec, "scale", 1.0))
    if getattr(spec, "sample_shape", None):
        per_sample = int(np.prod(features.shape[1:], dtype=np.int64))
        wanted = int(np.prod(spec.sample_shape, dtype=np.int64))
        if per_sample != wanted:
            raise RecipeError(
                f"dataset.sample_shape: {list(spec.sample_shape)} holds {wanted} values per "
                f"sample, but {_samples_source(spec, name)} has {per_sample} (samples of shape "
                f"{tuple(features.shape[1:])}); expected a shape whose sizes multiply to {per_sample}"
            )
        features = features.reshape((len(features), *spec.sample_shape))
    return features


def _samples_source(spec: Any, name: str | None) -> str:
    """Where the samples a reshape applies to come from: the file and array, or the dataset."""
    if spec.source == "npz":
        return f"{spec.path} array {name or spec.features!r}"
    if spec.source in ("csv", "parquet"):
        return f"{spec.path} ({len(spec.features)} feature columns)"
    return f"scikit-learn dataset {spec.name!r}"


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


def _label_source(spec: Any) -> tuple[str, str]:
    """The recipe field that names the labels, and where they come from."""
    if spec.source == "npz":
        return "dataset.labels", f"{spec.path} array {spec.labels!r}"
    if spec.source in ("csv", "parquet"):
        return "dataset.label", f"{spec.path} column {spec.label!r}"
    return "dataset", "the labels"


def inferred_task(spec: Any, labels: Any) -> str:
    """The recipe's `task_type`, or read from the labels: none without labels, regression for
    float labels with a fractional value (or a scikit-learn regression set), else classification.
    Float labels that are all whole numbers read as class ids; a continuous target of whole
    numbers needs `task_type: regression`."""
    declared = getattr(spec, "task_type", None)
    if declared is not None:
        if declared != "none" and labels is None:
            field, _ = _label_source(spec)
            raise RecipeError(
                f"dataset.task_type: {declared} needs labels, but the dataset has none "
                f"(set {field}, or task_type: none)"
            )
        return declared
    if labels is None:
        return "none"
    if spec.source == "sklearn" and spec.name in SKLEARN_REGRESSION:
        return "regression"
    raw = np.asarray(labels)
    if raw.dtype.kind == "f":
        finite = raw[np.isfinite(raw)]
        if (finite != np.round(finite)).any():
            return "regression"
    return "classification"


def _first_bad(
    raw: np.ndarray, checks: list[tuple[np.ndarray, str]], spec: Any, expected: str
) -> None:
    """Raise for the first sample that fails a check, naming the field, file, value and sample."""
    field, where = _label_source(spec)
    for bad, what in checks:
        if bad.any():
            position = tuple(np.argwhere(bad)[0])
            sample, value = int(position[0]), raw[position].item()
            raise RecipeError(
                f"{field}: {where} has {what} ({value!r}) at sample {sample}; {expected}"
            )


def checked_labels(labels: Any, spec: Any, task: str = "classification") -> np.ndarray:
    """Class ids as int64 (NaN, infinite, fractional or negative refused), or regression targets
    as float32 (any finite number; NaN and infinite refused); non-numeric labels refused."""
    raw = np.asarray(labels)
    field, where = _label_source(spec)
    if task == "regression":
        expected = "expected finite numbers (regression targets)"
        if raw.dtype.kind not in "iubf":
            raise RecipeError(f"{field}: {where} holds {raw.dtype} values; {expected}")
        if raw.dtype.kind == "f":
            _first_bad(raw, [(~np.isfinite(raw), "a NaN or infinite label")], spec, expected)
        return raw.astype(np.float32)
    expected = (
        "expected integer class ids 0, 1, 2, ... (for a continuous target set "
        "dataset.task_type: regression)"
    )
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
    _first_bad(raw, checks, spec, expected)
    return raw.astype(np.int64)


def _check_stratifiable(labels: np.ndarray, spec: Any) -> None:
    """Stratified splits need every class at least twice; a target with many distinct whole
    numbers (a count, a score) is usually a regression target read as class ids."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() >= 2:
        return
    field, where = _label_source(spec)
    lone = classes[counts < 2]
    raise RecipeError(
        f"{field}: {where} has {len(lone)} class(es) with a single sample (e.g. class "
        f"{lone[0].item()!r}; {len(classes)} classes in all); a stratified split needs at least 2 "
        "per class; for a continuous target set dataset.task_type: regression"
    )
