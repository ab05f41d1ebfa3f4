"""Checks that need the data or the model, run before any training: bad input fails fast."""

from __future__ import annotations

from onnxforge.adapters import get_adapter
from onnxforge.datasets import load_splits
from onnxforge.errors import RecipeError
from onnxforge.inputs import describe, take
from onnxforge.recipe import Recipe, load_recipe


def preflight(recipe: Recipe, source: str) -> None:
    """Load the data, build the model, load its checkpoint and run two samples through it."""
    try:
        splits = load_splits(recipe.dataset)
    except RecipeError as error:
        raise RecipeError(f"{source}: {error}") from None
    except ValueError as error:
        raise RecipeError(f"{source}: dataset: {error}") from None
    from onnxforge.training import fresh_model

    adapter = get_adapter(recipe.model.framework)
    try:
        adapter.check_source(recipe.model)
    except ValueError as error:
        raise RecipeError(f"{source}: {error}") from None
    samples = describe(splits.x_train)  # e.g. "(1, 8, 8) float32", or one entry per named input
    label = recipe.model.architecture or str(recipe.model.file)
    try:
        model = fresh_model(recipe, splits)
    except Exception as error:  # noqa: BLE001 - bad kwargs or a shape the architecture can't take
        raise RecipeError(
            f"{source}: model.kwargs / dataset.sample_shape: cannot build "
            f"{label!r} with {recipe.model.kwargs} for samples {samples}: {error}"
        ) from None
    if recipe.model.checkpoint is not None:
        try:
            adapter.load_checkpoint(model, recipe.model.checkpoint)
        except Exception as error:  # noqa: BLE001 - any load failure is a recipe problem
            first_line = str(error).strip().splitlines()[0]
            raise RecipeError(
                f"{source}: model.checkpoint: {recipe.model.checkpoint} does not fit "
                f"model {label!r}: {first_line}"
            ) from None
    try:
        adapter.predict(model, take(splits.x_train, slice(0, 2)))
    except Exception as error:  # noqa: BLE001
        raise RecipeError(
            f"{source}: dataset: samples {samples} do not fit model {label!r}: "
            f"{str(error).strip().splitlines()[0]}"
        ) from None


def load_and_check(path: str, overrides: dict[str, str] | None = None) -> Recipe:
    """Schema check, then preflight: everything `onnxforge validate` promises."""
    recipe = load_recipe(path, overrides)
    preflight(recipe, path)
    return recipe
