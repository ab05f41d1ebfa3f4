"""The `preprocessing` and `class_labels` version tags: what the pipeline did to raw features (as
onnxforge/datasets.py `_normalise` does it) and what each class id means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxforge.deploy_info import class_labels, deployment_tags, preprocessing
from onnxforge.recipe import (
    GeneratedDataset,
    NpzDataset,
    SklearnDataset,
    SyntheticDataset,
    TableDataset,
)


def _apply(entry: dict, raw: np.ndarray) -> np.ndarray:
    """What a client does with one `preprocessing` input entry."""
    features = raw.astype(entry["dtype"])
    if entry["divide_by"] is not None:
        features = features / np.float32(entry["divide_by"])
    if entry["sample_shape"]:
        features = features.reshape((len(features), *entry["sample_shape"]))
    return features


def test_sklearn_digits_scaled_and_reshaped_with_target_names() -> None:
    from sklearn.datasets import load_digits

    from onnxforge.datasets import _normalise

    spec = SklearnDataset(source="sklearn", name="digits", scale=16.0, sample_shape=[1, 8, 8])
    tags = deployment_tags(spec, 10)
    found = json.loads(tags["preprocessing"])
    assert found == {
        "source": "sklearn:digits",
        "inputs": [
            {
                "name": None,
                "raw_dtype": "float64",
                "dtype": "float32",
                "divide_by": 16.0,
                "sample_shape": [1, 8, 8],
            }
        ],
        "steps": "the input: cast to float32, then divided by 16.0; each sample reshaped to "
        "[1, 8, 8]",
    }
    raw = load_digits().data
    ours = _apply(found["inputs"][0], raw)
    theirs = _normalise(np.asarray(raw), spec)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert json.loads(tags["class_labels"]) == [str(i) for i in range(10)]


def test_class_labels_declared_target_names_ids_and_none() -> None:
    iris = SklearnDataset(source="sklearn", name="iris")
    assert class_labels(iris, 3) == ["setosa", "versicolor", "virginica"]
    declared = SklearnDataset(source="sklearn", name="iris", class_labels=["a", "b"])
    assert class_labels(declared, 3) == ["a", "b", "2"]  # a class past the names keeps its id
    generated = GeneratedDataset(source="generated", task="token_majority")
    assert class_labels(generated, 4) == ["0", "1", "2", "3"]
    diabetes = SklearnDataset(source="sklearn", name="diabetes")
    assert class_labels(diabetes, 0) is None
    assert "class_labels" not in deployment_tags(diabetes, 0)  # regression: no tag
    assert json.loads(deployment_tags(iris, 3)["class_labels"])[0] == "setosa"


def test_npz_integer_ids_stay_int64_and_floats_are_scaled(tmp_path: Path) -> None:
    from onnxforge.datasets import _normalise

    path = tmp_path / "data.npz"
    ids = np.arange(24, dtype=np.int32).reshape(6, 4)
    dense = np.linspace(0, 255, 24).reshape(6, 4)
    np.savez_compressed(path, ids=ids, dense=dense, y=np.arange(6) % 2)
    spec = NpzDataset(source="npz", path=path, features=["ids", "dense"], scale=255.0)
    found = preprocessing(spec)
    assert found["source"] == "npz:data.npz"
    assert found["inputs"] == [
        {
            "name": "ids",
            "raw_dtype": "int32",
            "dtype": "int64",
            "divide_by": None,
            "sample_shape": None,
        },
        {
            "name": "dense",
            "raw_dtype": "float64",
            "dtype": "float32",
            "divide_by": 255.0,
            "sample_shape": None,
        },
    ]
    for entry, raw in zip(found["inputs"], (ids, dense), strict=True):
        theirs = _normalise(raw, spec, entry["name"])
        ours = _apply(entry, raw)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    single = NpzDataset(source="npz", path=path, features="dense")
    assert preprocessing(single)["inputs"][0]["name"] is None  # the model's single input


def test_tables_generated_synthetic_and_an_unreadable_file(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    ints = TableDataset(source="csv", path=csv, features=["a", "b"], label="label", scale=4.0)
    assert preprocessing(ints)["inputs"][0]["dtype"] == "int64"  # scale is not applied to ints
    csv.write_text("a,b,label\n1,2.5,0\n3,4,1\n")
    mixed = TableDataset(source="csv", path=csv, features=["a", "b"], label="label", scale=4.0)
    entry = preprocessing(mixed)["inputs"][0]
    assert (entry["raw_dtype"], entry["dtype"], entry["divide_by"]) == ("float64", "float32", 4.0)
    csv.write_text("not,a\n")  # the features are gone: the rule is written instead
    unreadable = preprocessing(mixed)
    assert unreadable["inputs"][0]["dtype"] is None
    assert "integer features: cast to int64" in unreadable["steps"]

    generated = preprocessing(GeneratedDataset(source="generated", task="token_majority"))
    assert generated["inputs"] == [
        {"name": None, "raw_dtype": "int64", "dtype": "int64", "divide_by": None,
         "sample_shape": None}
    ]  # fmt: skip
    synthetic = SyntheticDataset(
        source="synthetic",
        inputs=[{"name": "ids", "shape": ["batch", 8], "dtype": "int64", "high": 9}],
    )
    assert preprocessing(synthetic)["inputs"][0]["name"] == "ids"
    assert preprocessing(synthetic)["steps"].startswith("none")


@pytest.mark.parametrize("count", [1, 5])
def test_tags_are_json_strings(count: int) -> None:
    spec = SklearnDataset(source="sklearn", name="wine")
    tags = deployment_tags(spec, count)
    assert set(tags) == {"preprocessing", "class_labels"}
    assert all(isinstance(value, str) for value in tags.values())
    assert len(json.loads(tags["class_labels"])) == max(count, 3)
