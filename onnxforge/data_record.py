"""The run's data, made once: the recipe's splits in one .npz file, described by a DataRecord.

Every stage (training, export, calibration, parity, champions, the benchmark and its worker
processes) reads the splits through `read_splits`, which checks the file's sha256 first, so all of
them see the same bytes and a changed file is refused instead of used. The file is written
byte-for-byte reproducibly (fixed zip timestamps, sorted names), so the same data gives the same
sha256 in every run: that sha256 is the data part of the cache keys.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.datasets import Splits
from onnxforge.errors import IntegrityError
from onnxforge.inputs import count
from onnxforge.onnx_files import sha256_of, write_atomically
from onnxforge.records import Record

DATA_FILE = "data.npz"
PARTS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_SEP = "::"  # array names: "x_train" for a lone array, "x_train::ids" for a named input
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry; any fixed value works


class DataRecord(Record):
    """The materialised splits: where the file is and what it must hash to."""

    path: str
    sha256: str
    fingerprint: str  # sha256 over the arrays' bytes (the `dataset_hash` on registered versions)
    shapes: dict[str, tuple[int, ...]]  # array name -> shape, as stored
    num_classes: int  # 0 for regression and label-free data
    samples: dict[str, int]  # split -> number of samples
    task: str = "classification"  # classification | regression | none (read from the labels)


def _arrays(splits: Splits) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for part in PARTS:
        value = getattr(splits, part)
        if value is None:  # no labels (task none): absent from the file
            continue
        if isinstance(value, dict):
            arrays.update({f"{part}{_SEP}{name}": array for name, array in value.items()})
        else:
            arrays[part] = value
    return arrays


def _write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """An .npz numpy can read, with nothing in it that changes from one write to the next
    (np.savez stamps each entry with the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():  # insertion order: the model's input order
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), buffer.getvalue())


def materialize(splits: Splits, out_dir: Path) -> DataRecord:
    """Write the splits to `out_dir/data.npz` and describe the file."""
    arrays = _arrays(splits)
    path = write_atomically(Path(out_dir) / DATA_FILE, lambda temp: _write_npz(arrays, temp))
    return DataRecord(
        path=str(path),
        sha256=sha256_of(path),
        fingerprint=splits.fingerprint(),
        shapes={name: tuple(int(d) for d in array.shape) for name, array in arrays.items()},
        num_classes=splits.num_classes,
        samples={part: count(getattr(splits, part)) for part in ("x_train", "x_val", "x_test")},
        task=splits.task,
    )


def verify(path: str | Path, expected_sha256: str) -> None:
    """Refuse a data file that is missing or whose bytes are not the recorded ones."""
    if not Path(path).is_file():
        raise IntegrityError(f"data file {path}: missing (expected sha256 {expected_sha256})")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise IntegrityError(
            f"data file {path}: sha256 mismatch: expected {expected_sha256}, got {actual}"
        )


def read_file(path: str | Path, expected_sha256: str) -> Splits:
    """The splits stored in `path`, after checking its sha256 (IntegrityError names the file)."""
    verify(path, expected_sha256)
    with np.load(path, allow_pickle=False) as archive:
        stored = {name: archive[name] for name in archive.files}
    parts: dict[str, Any] = {part: None for part in PARTS}
    for name, array in stored.items():
        part, _, input_name = name.partition(_SEP)
        if input_name:
            parts[part] = {**(parts[part] or {}), input_name: array}
        else:
            parts[part] = array
    return Splits(**parts)


def read_splits(data: DataRecord) -> Splits:
    """The run's splits, checked against the record before use."""
    return read_file(data.path, data.sha256)


# MLflow keeps a dataset's digest in a String(36) column (mlflow/store/tracking/dbmodels/models.py,
# SqlDataset.digest): the record's sha256 is cut to its first 36 hex digits there.
DIGEST_LENGTH = 36


def dataset_name(spec: Any) -> str:
    """A short name for the recipe's dataset, e.g. sklearn:digits or data/train.csv."""
    if spec.source == "sklearn":
        return f"sklearn:{spec.name}"
    if spec.source == "generated":
        return f"generated:{spec.task}"
    if spec.source == "synthetic":
        return "synthetic"
    return Path(spec.path).name


def dataset_source(spec: Any) -> dict[str, str]:
    """Where the data comes from: the file a recipe names, or the code that makes it."""
    if spec.source in ("npz", "csv", "parquet"):
        return {"path": str(spec.path)}
    if spec.source == "sklearn":
        return {"code": f"sklearn.datasets.load_{spec.name}"}
    if spec.source == "generated":
        return {"code": f"onnxforge.datasets.{spec.task}"}
    return {"code": "onnxforge.datasets (synthetic inputs)"}


def log_dataset_input(tracking_uri: str, run_id: str, spec: Any, data: DataRecord) -> None:
    """Record the training split as the MLflow run's dataset input (name, digest, source), with
    the split sizes and the full sha256 as input tags."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    from onnxforge.tracking import client

    splits = read_splits(data)
    where = dataset_source(spec)
    source = where["path"] if "path" in where else CodeDatasetSource(tags={"source": where["code"]})
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice (schemes "" and "file") and warns
        # that a path "can be interpreted in multiple ways"; both are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(
            splits.x_train,
            targets=splits.y_train,
            source=source,
            name=dataset_name(spec),
            digest=data.sha256[:DIGEST_LENGTH],
        )
    tags = [
        InputTag(key="mlflow.data.context", value="training"),
        InputTag(key="onnxforge.data_sha256", value=data.sha256),
        InputTag(key="onnxforge.task", value=data.task),
        *(InputTag(key=f"onnxforge.samples.{k}", value=str(v)) for k, v in data.samples.items()),
    ]
    client(tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)]
    )
