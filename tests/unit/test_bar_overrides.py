"""The promotion bar is the recipe's: an override (`--set`, the flow's `overrides`) may tighten
floors, margins, budgets and parity tolerances, never loosen them, and may not change the
objective, unless the operator sets ONNXFORGE_TRUSTED_BAR=1 (or ONNXFORGE_TRUSTED_OVERRIDES=1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flows.cli
from flows.cli import main
from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from onnxforge.recipe import load_recipe
from tests.conftest import DEFAULT_RECIPE
from tests.recipe_files import write_recipe

OPT_IN = "set ONNXFORGE_TRUSTED_BAR=1 to allow it"


@pytest.fixture(autouse=True)
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """No opt-in from the environment the tests run in; `run` must never reach the flow."""
    monkeypatch.delenv("ONNXFORGE_TRUSTED_BAR", raising=False)
    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    monkeypatch.setattr(flows.cli, "_run", lambda *_, **__: pytest.fail("the run started"))


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, which is returned."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# (--set key, a looser value, a stricter value, the recipe's value and the direction allowed)
LOOSER = [
    ("register.floor_p_value", "0.99", "0.001", "0.01 or lower"),
    ("register.champion_accuracy_budget", "1", "0.001", "0.005 or lower"),
    ("register.regression_margin", "10", "0.05", "0.1 or lower"),
    ("register.speed_margin", "0", "0.5", "0.05 or higher"),
    ("parity.accuracy_drop_budget", "1", "0.001", "0.01 or lower"),
    ("parity.tolerances.int8-dynamic.atol", "100", "0.1", "0.6 or lower"),
    ("parity.tolerances.int8-dynamic.mean_atol", "1", "0.01", "0.05 or lower"),
    ("parity.tolerances.int8-dynamic.min_top1_agreement", "0", "0.99", "0.97 or higher"),
    ("parity.tolerances.int8-static.atol", "9", "0.5", "1.0 or lower"),
    ("parity.tolerances.fp32.atol", "1", "0", "1e-05 or lower"),
]


@pytest.mark.parametrize(("key", "looser", "stricter", "allowed"), LOOSER)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_set_that_loosens_the_bar_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
    command: str,
    key: str,
    looser: str,
    stricter: str,
    allowed: str,
) -> None:
    line = refused(capsys, command, str(DEFAULT_RECIPE), "--set", f"{key}={looser}")
    recipe_value = allowed.split(" or ")[0]
    assert line == (
        f"error: {DEFAULT_RECIPE}: override {key}: overrides may only tighten {key} (the recipe "
        f"has {recipe_value}, the override gives {looser}; allowed: {allowed}); {OPT_IN}"
    )


@pytest.mark.parametrize(("key", "looser", "stricter", "allowed"), LOOSER)
def test_a_set_that_tightens_the_bar_is_taken(
    key: str, looser: str, stricter: str, allowed: str
) -> None:
    recipe = load_recipe(DEFAULT_RECIPE, {key: stricter})
    parts = key.split(".")
    if parts[0] == "parity" and parts[1] == "tolerances":
        assert getattr(recipe.tolerance(parts[2]), parts[3]) == float(stricter)
    else:
        section = recipe.registry if parts[0] == "register" else recipe.parity
        assert getattr(section, parts[1]) == float(stricter)


@pytest.mark.parametrize(
    ("key", "value", "given"),
    [
        (
            "register.objective.metric",
            "size_bytes",
            "the recipe has 'p50_ms', the override gives 'size_bytes'",
        ),
        ("register.objective.batch_size", "16", "the recipe has 1, the override gives 16"),
        (
            "register.objective.provider",
            "CUDAExecutionProvider",
            "the recipe has 'CPUExecutionProvider', the override gives 'CUDAExecutionProvider'",
        ),
        (
            "parity.tolerances.int8-static.scale",
            "absolute",
            "the recipe has 'spread', the override gives 'absolute'",
        ),
    ],
)
def test_the_objective_and_a_tolerance_scale_are_the_recipes_alone(
    key: str, value: str, given: str
) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(DEFAULT_RECIPE, {key: value})
    assert str(caught.value) == (
        f"{DEFAULT_RECIPE}: override {key}: overrides may not change {key} (the promotion bar is "
        f"the recipe's: {given}); {OPT_IN}"
    )
    # restating the recipe's own objective changes nothing
    assert load_recipe(DEFAULT_RECIPE, {"register.objective.batch_size": 1}).registry.objective


ATTACK = {
    "register.floor_p_value": 0.99,
    "register.champion_accuracy_budget": 1,
    "register.regression_margin": 10,
    "register.objective.metric": "size_bytes",
    "parity.tolerances": "{int8-dynamic: {atol: 1000, mean_atol: 1000, min_top1_agreement: 0}}",
    "parity.accuracy_drop_budget": 1,
}


def test_the_flow_parameter_cannot_lower_the_bar() -> None:
    """The overrides of the issue's attack, as the flow's validate_recipe task receives them."""
    with pytest.raises(RecipeError, match=r"^\S+: override register\.\S+: overrides may"):
        load_and_check(str(DEFAULT_RECIPE), ATTACK)
    for key, value in ATTACK.items():
        with pytest.raises(RecipeError, match=f"override {key}: overrides may "):
            load_and_check(str(DEFAULT_RECIPE), {key: value})


def test_the_flow_task_refuses_it_too() -> None:
    from tasks.prepare import validate_recipe

    with pytest.raises(RecipeError, match="override register.floor_p_value: overrides may only"):
        validate_recipe.fn(str(DEFAULT_RECIPE), {"register.floor_p_value": 0.99})


def test_replacing_a_section_cannot_drop_the_recipes_bar(tmp_path: Path) -> None:
    """`register={...}` without the recipe's strict values falls back to looser defaults."""
    strict = write_recipe(tmp_path, {"register.floor_p_value": 0.001, "register.min_accuracy": 0.9})
    section: dict[str, Any] = {"model_name": "digits-cnn", "min_accuracy": 0.9}
    with pytest.raises(RecipeError) as caught:
        load_recipe(strict, {"register": section})
    assert str(caught.value).startswith(
        f"{strict}: override register: overrides may only tighten register.floor_p_value "
        "(the recipe has 0.001, the override gives 0.01; allowed: 0.001 or lower)"
    )


def test_an_optional_floor_may_be_added_or_raised_never_removed(tmp_path: Path) -> None:
    assert (
        load_recipe(DEFAULT_RECIPE, {"register.min_accuracy": "0.5"}).registry.min_accuracy == 0.5
    )
    assert load_recipe(DEFAULT_RECIPE, {"register.max_rmse": "2"}).registry.max_rmse == 2
    floored = write_recipe(tmp_path, {"register.min_accuracy": 0.9})
    assert load_recipe(floored, {"register.min_accuracy": 0.95}).registry.min_accuracy == 0.95
    with pytest.raises(RecipeError) as caught:
        load_recipe(floored, {"register.min_accuracy": "null"})
    assert str(caught.value) == (
        f"{floored}: override register.min_accuracy: overrides may only tighten "
        "register.min_accuracy (the recipe has 0.9, the override gives none (unset); allowed: "
        f"0.9 or higher); {OPT_IN}"
    )
    with pytest.raises(RecipeError, match="the recipe has 0.9, the override gives 0.5"):
        load_recipe(floored, {"register.min_accuracy": 0.5})


def test_the_edge_memory_budget_may_only_shrink(tmp_path: Path) -> None:
    """champion-edge's bar: a file over the budget never becomes the edge champion."""
    edged = write_recipe(tmp_path, {"edge": {"memory_budget_mb": 64}})
    assert load_recipe(edged, {"edge.memory_budget_mb": "32"}).edge.memory_budget_mb == 32
    with pytest.raises(RecipeError) as caught:
        load_recipe(edged, {"edge.memory_budget_mb": "100000"})
    assert str(caught.value) == (
        f"{edged}: override edge.memory_budget_mb: overrides may only tighten "
        "edge.memory_budget_mb (the recipe has 64, the override gives 100000; allowed: 64 or "
        f"lower); {OPT_IN}"
    )
    # a recipe without an edge target: the schema's default (256 MB) is the bar an added one meets
    assert load_recipe(DEFAULT_RECIPE, {"edge": "{memory_budget_mb: 128}"}).edge is not None
    with pytest.raises(RecipeError, match="the recipe has 256.0, the override gives 4096"):
        load_recipe(DEFAULT_RECIPE, {"edge": "{memory_budget_mb: 4096}"})


def test_a_relative_tolerance_may_be_added_never_removed(tmp_path: Path) -> None:
    assert load_recipe(DEFAULT_RECIPE, {"parity.tolerances.fp16.rtol": 0.1}).tolerance(
        "fp16"
    ).rtol == (0.1)
    bounded = write_recipe(tmp_path, {"parity.tolerances": {"fp16": {"rtol": 0.1}}})
    with pytest.raises(RecipeError, match=r"parity\.tolerances\.fp16\.rtol \(the recipe has 0.1"):
        load_recipe(bounded, {"parity.tolerances": "{}"})


def test_a_recipe_file_sets_any_bar_it_likes(tmp_path: Path) -> None:
    """The bar is the recipe's: written in the file, a loose value is the operator's choice."""
    loose = write_recipe(tmp_path, {"register.champion_accuracy_budget": 1})
    assert load_recipe(loose).registry.champion_accuracy_budget == 1
    assert load_recipe(loose, {"register.champion_accuracy_budget": 0.5})


@pytest.mark.parametrize("variable", ["ONNXFORGE_TRUSTED_BAR", "ONNXFORGE_TRUSTED_OVERRIDES"])
def test_the_operator_may_opt_in(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    recipe = load_recipe(
        DEFAULT_RECIPE, {"register.floor_p_value": 0.99, "register.objective.metric": "size_bytes"}
    )
    assert (recipe.registry.floor_p_value, recipe.registry.objective.metric) == (
        0.99,
        "size_bytes",
    )


def test_the_bar_opt_in_does_not_open_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXFORGE_TRUSTED_BAR", "1")
    with pytest.raises(RecipeError, match="overrides may not change model.architecture"):
        load_recipe(DEFAULT_RECIPE, {"model.architecture": "os:system"})
