"""Every shipped recipe loads and passes preflight."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxforge.preflight import load_and_check
from tests.conftest import REPO

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


def test_there_is_a_default_recipe() -> None:
    assert REPO / "configs" / "digits_cnn.yaml" in RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads(path: Path) -> None:
    recipe = load_and_check(str(path))
    assert recipe.registry.objective.provider in recipe.benchmark.providers
