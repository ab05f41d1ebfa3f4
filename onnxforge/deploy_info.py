"""What a client must do to its raw inputs, and what the class ids mean: version tags for `pull`.

`deployment_tags(dataset_spec, classes)` gives a registered version two tags (JSON strings):

- `preprocessing`: what onnxforge/datasets.py `_normalise` did to the raw features before the
  model saw them, so a client repeats it. Per input:
  `{"name": str | None, "raw_dtype": str | None, "dtype": "float32" | "int64" | ...,
  "divide_by": float | None, "sample_shape": [int, ...] | None}`; `name` None means the model's
  single input, `raw_dtype` None means it could not be read from the data file here (then the
  rule in `steps` decides: integers stay int64 and unscaled, other numbers become float32 / scale).
  The whole tag is `{"source": str, "inputs": [...], "steps": str}`.
- `class_labels`: `["name of class 0", "name of class 1", ...]` for a classifier (the recipe's
  `dataset.class_labels`, else a scikit-learn dataset's `target_names`, else "0".."n-1"); no tag
  for regression or label-free models (`classes` 0), nor when the list's JSON is longer than
  MLflow's model-version tag limit (100,000 characters).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PREPROCESSING_TAG = "preprocessing"
CLASS_LABELS_TAG = "class_labels"
# MLflow's MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH (mlflow/utils/validation.py)
TAG_VALUE_LIMIT = 100_000
RULE = (
    "integer features: cast to int64, not scaled (token ids); other numbers: cast to float32 and "
    "divided by dataset.scale; then each sample reshaped to dataset.sample_shape when it is set"
)


def deployment_tags(dataset_spec: Any, classes: int) -> dict[str, str]:
    """`preprocessing` (always) and `class_labels` (classifiers only), as JSON strings."""
    tags = {PREPROCESSING_TAG: json.dumps(preprocessing(dataset_spec), sort_keys=True)}
    labels = class_labels(dataset_spec, classes)
    if labels is not None:
        text = json.dumps(labels, ensure_ascii=False)
        if len(text) <= TAG_VALUE_LIMIT:
            tags[CLASS_LABELS_TAG] = text
    return tags


# ---------------------------------------------------------------- preprocessing


def preprocessing(spec: Any) -> dict[str, Any]:
    """What the pipeline did to each raw feature array (see onnxforge/datasets.py _normalise)."""
    source = spec.source
    if source == "synthetic":
        inputs = [
            _entry(declared.name, None, declared.dtype, None, None) for declared in spec.inputs
        ]
        return {
            "source": "synthetic",
            "inputs": inputs,
            "steps": "none: random inputs drawn in each input's declared dtype and shape",
        }
    if source == "generated":
        return {
            "source": f"generated:{spec.task}",
            "inputs": [_entry(None, "int64", "int64", None, None)],
            "steps": "none: token ids, int64, not scaled",
        }
    raw = _raw_dtypes(spec)
    shape = list(spec.sample_shape) if getattr(spec, "sample_shape", None) else None
    inputs = [_normalised(name, dtype, float(spec.scale), shape) for name, dtype in raw]
    return {"source": _source_name(spec), "inputs": inputs, "steps": _steps(inputs)}


def _entry(
    name: str | None,
    raw: str | None,
    dtype: str | None,
    divide_by: float | None,
    shape: list[int] | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "raw_dtype": raw,
        "dtype": dtype,
        "divide_by": divide_by,
        "sample_shape": shape,
    }


def _normalised(
    name: str | None, raw: str | None, scale: float, shape: list[int] | None
) -> dict[str, Any]:
    """_normalise's branch for one raw dtype; None: unknown here, decided by RULE."""
    import numpy as np

    if raw is None:
        return _entry(name, None, None, scale, shape)
    if np.issubdtype(np.dtype(raw), np.integer):
        return _entry(name, raw, "int64", None, shape)
    return _entry(name, raw, "float32", scale, shape)


def _steps(inputs: list[dict[str, Any]]) -> str:
    """The entries as one sentence a person can follow."""
    parts = []
    for entry in inputs:
        who = f"input {entry['name']!r}" if entry["name"] else "the input"
        if entry["dtype"] is None:
            what = f"{RULE} (scale {entry['divide_by']})"
        elif entry["dtype"] == "int64":
            what = "cast to int64, not scaled"
        elif entry["divide_by"] == 1.0:
            what = "cast to float32 (scale 1: not divided)"
        else:
            what = f"cast to float32, then divided by {entry['divide_by']}"
        if entry["sample_shape"]:
            what += f"; each sample reshaped to {entry['sample_shape']}"
        parts.append(f"{who}: {what}")
    return "; ".join(parts)


def _source_name(spec: Any) -> str:
    if spec.source == "sklearn":
        return f"sklearn:{spec.name}"
    return f"{spec.source}:{Path(spec.path).name}"


def _raw_dtypes(spec: Any) -> list[tuple[str | None, str | None]]:
    """(input name or None for the single input, the raw feature dtype or None if unreadable)."""
    try:
        if spec.source == "sklearn":
            return [(None, str(_sklearn_bunch(spec.name).data.dtype))]
        if spec.source == "npz":
            names = [spec.features] if isinstance(spec.features, str) else list(spec.features)
            dtypes = _npz_dtypes(Path(spec.path), names)
            single = isinstance(spec.features, str)
            return [(None if single else name, dtypes.get(name)) for name in names]
        if spec.source in ("csv", "parquet"):
            return [(None, _table_dtype(spec))]
    except Exception:  # noqa: BLE001 - a tag must not fail a registration; RULE describes it
        pass
    names = (
        list(spec.features)
        if spec.source == "npz" and not isinstance(spec.features, str)
        else [None]
    )
    return [(name, None) for name in names]


@lru_cache(maxsize=8)
def _sklearn_bunch(name: str) -> Any:
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")()


def _npz_dtypes(path: Path, names: list[str]) -> dict[str, str]:
    """Each named array's dtype from its .npy header, without reading the data."""
    import zipfile

    import numpy as np

    found = {}
    with zipfile.ZipFile(path) as archive:
        for name in names:
            with archive.open(f"{name}.npy") as member:
                version = np.lib.format.read_magic(member)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _, _, dtype = header(member)
                found[name] = str(dtype)
    return found


def _table_dtype(spec: Any) -> str:
    """The dtype of the feature columns as the loader gets them (DataFrame.to_numpy)."""
    import pandas as pd

    if spec.source == "csv":
        table = pd.read_csv(spec.path, usecols=list(spec.features))
    else:
        table = pd.read_parquet(spec.path, columns=list(spec.features))
    return str(table[list(spec.features)].head(0).to_numpy().dtype)


# ---------------------------------------------------------------- class labels


def class_labels(spec: Any, classes: int) -> list[str] | None:
    """Names of class ids 0..classes-1; None for regression or label-free data (classes 0)."""
    if classes <= 0:
        return None
    declared = getattr(spec, "class_labels", None)
    if declared:
        names = [str(label) for label in declared]
    elif spec.source == "sklearn":
        target_names = getattr(_sklearn_bunch(spec.name), "target_names", None)
        names = [str(label) for label in target_names] if target_names is not None else []
    else:
        names = []
    # a class id past the declared names keeps its number, so names[id] always exists
    return names + [str(index) for index in range(len(names), classes)]
