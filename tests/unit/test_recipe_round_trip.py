"""A recipe sent to another process (the benchmark's measuring process, a pool's worker) is
validated there again: `Recipe.to_data()` must validate back to the same recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from onnxforge.errors import RecipeError
from onnxforge.recipe import Recipe, load_recipe
from tests.conftest import REPO
from tests.recipe_files import write_recipe

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))

# Variant sets the README allows: any subset, an int8 variant without its default source.
MINIMAL_VARIANTS: list[dict[str, Any]] = [
    {},
    {"int8-dynamic": {}},
    {"int8-static": {}},
    {"int8-dynamic": {}, "int8-static": {"samples": 64}},
    {"fp16": {}},
    {"ort-optimized": {}, "int8-dynamic": {"source": "ort-optimized"}},
    {"simplified": {}, "int8-dynamic": {"source": "simplified"}},
]


def _round_trip(recipe: Recipe) -> Recipe:
    """What the measuring process does with the data: JSON in a file, then model_validate."""
    return Recipe.model_validate(json.loads(json.dumps(recipe.to_data())))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    assert _round_trip(recipe) == recipe


@pytest.mark.parametrize("variants", MINIMAL_VARIANTS, ids=json.dumps)
def test_minimal_variant_sets_round_trip(tmp_path: Path, variants: dict[str, Any]) -> None:
    recipe = load_recipe(write_recipe(tmp_path, {"variants": variants}))
    again = _round_trip(recipe)
    assert again == recipe
    assert again.requested_variants() == recipe.requested_variants()


def test_an_int8_variant_alone_keeps_its_default_source_unset(tmp_path: Path) -> None:
    """The full dump writes int8's default `source: simplified` out, which the variant-chain
    check then reads as named by the recipe; to_data leaves it out."""
    recipe = load_recipe(write_recipe(tmp_path, {"variants": {"int8-dynamic": {}}}))
    assert recipe.to_data()["variants"] == {"int8-dynamic": {}}
    with pytest.raises(ValueError, match="'simplified' is not among the recipe's variants"):
        Recipe.model_validate(recipe.model_dump(mode="json", by_alias=True))


def test_a_named_source_that_is_not_built_is_still_refused(tmp_path: Path) -> None:
    change = {"variants": {"int8-dynamic": {"source": "simplified"}}}
    with pytest.raises(RecipeError, match="variants.int8-dynamic.source: 'simplified' is not"):
        load_recipe(write_recipe(tmp_path, change))


def test_unset_fields_stay_unset_across_the_round_trip(tmp_path: Path) -> None:
    """npz `labels` omitted means 'y when the file has it'; written out it would become a
    requirement in the other process."""
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 4), dtype=np.float32))
    recipe = load_recipe(write_recipe(tmp_path, {"dataset": {"source": "npz", "path": "d.npz"}}))
    again = _round_trip(recipe)
    assert "labels" not in again.dataset.model_fields_set
    assert str(again.dataset.path) == str(tmp_path / "d.npz")
