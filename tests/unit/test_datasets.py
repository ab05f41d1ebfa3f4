"""The one dataset loader: shipped sets, local files, generated tasks and synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxforge.datasets import load_splits
from onnxforge.recipe import load_recipe
from tests.conftest import DEFAULT_RECIPE


def _digits_table(folder: Path, kind: str) -> Path:
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    table["digit"] = digits.target
    path = folder / f"digits.{kind}"
    table.to_csv(path, index=False) if kind == "csv" else table.to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_files_load_like_the_shipped_set(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")  # the override names a data file
    path = _digits_table(tmp_path, kind)
    dataset = (
        f"{{source: {kind}, path: {path}, label: digit, sample_shape: [1, 8, 8], scale: 16.0, "
        f"features: [{', '.join(f'p{i}' for i in range(64))}]}}"
    )
    from_file = load_splits(load_recipe(DEFAULT_RECIPE, {"dataset": dataset}).dataset)
    shipped = load_splits(load_recipe(DEFAULT_RECIPE).dataset)
    assert from_file.x_train.shape == shipped.x_train.shape == (1293, 1, 8, 8)
    assert from_file.fingerprint() == shipped.fingerprint()


def test_synthetic_inputs_follow_the_spec() -> None:
    from onnxforge.recipe import SyntheticDataset

    spec = SyntheticDataset.model_validate(
        {
            "source": "synthetic",
            "samples": 100,
            "dims": {"sequence": 12},
            "inputs": [
                {
                    "name": "ids",
                    "shape": ["batch", "sequence"],
                    "dtype": "int64",
                    "low": 0,
                    "high": 50,
                }
            ],
        }
    )
    splits = load_splits(spec)
    assert splits.y_train is None and splits.y_test is None and splits.num_classes == 0
    assert splits.x_train.dtype == np.int64 and splits.x_train.shape[1:] == (12,)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 100
    assert splits.x_train.min() >= 0 and splits.x_train.max() < 50


def test_generated_task_is_seeded_and_balanced() -> None:
    recipe = load_recipe(DEFAULT_RECIPE.parent / "text_transformer.yaml")
    first, second = load_splits(recipe.dataset), load_splits(recipe.dataset)
    assert first.fingerprint() == second.fingerprint()
    assert first.x_train.dtype == np.int64 and first.x_train.shape[1] == 48
    counts = np.bincount(first.y_train, minlength=4) / len(first.y_train)
    assert counts.min() > 0.2
