"""The promotion policy: when `champion` moves, and why it stays."""

from __future__ import annotations

from types import SimpleNamespace

from onnxforge.registry import promotion_decision


def champion(**tags: str) -> SimpleNamespace:
    base = {"objective": "cpu.bs1.p50_ms", "objective_value": "1.0", "parity.accuracy": "0.97"}
    return SimpleNamespace(version="3", tags={**base, **tags})


def test_no_champion_means_promote(digits_recipe) -> None:
    assert promotion_decision(digits_recipe, 1.0, 0.9, None, {}) == (True, "no champion yet")


def test_faster_within_accuracy_budget_promotes(digits_recipe) -> None:
    moved, reason = promotion_decision(digits_recipe, 0.5, 0.968, champion(), {})
    assert moved and "beats champion v3" in reason


def test_slower_on_objective_stays(digits_recipe) -> None:
    moved, reason = promotion_decision(digits_recipe, 1.5, 0.97, champion(), {})
    assert not moved and "does not beat" in reason


def test_accuracy_drop_beyond_budget_stays(digits_recipe) -> None:
    moved, reason = promotion_decision(digits_recipe, 0.5, 0.95, champion(), {})
    assert not moved and "below champion v3" in reason


def test_regression_on_another_batch_size_stays(digits_recipe) -> None:
    old = champion(**{"p50_ms.CPUExecutionProvider.bs16": "2.0"})
    candidate = {
        "p50_ms.CPUExecutionProvider.bs16": "2.3",
        "p50_ms.CPUExecutionProvider.bs1": "0.5",
    }
    moved, reason = promotion_decision(digits_recipe, 0.5, 0.97, old, candidate)
    assert not moved
    assert reason == (
        "slower than champion v3 by more than 10%: p50_ms.CPUExecutionProvider.bs16 2.3 vs 2 (+15%)"
    )


def test_within_the_margin_is_not_a_regression(digits_recipe) -> None:
    old = champion(**{"p50_ms.CPUExecutionProvider.bs16": "2.0"})
    moved, _ = promotion_decision(
        digits_recipe, 0.5, 0.97, old, {"p50_ms.CPUExecutionProvider.bs16": "2.1"}
    )
    assert moved


def test_champion_measured_on_another_objective_stays(digits_recipe) -> None:
    moved, reason = promotion_decision(
        digits_recipe, 0.5, 0.97, champion(objective="size_bytes"), {}
    )
    assert not moved and "promote it by hand" in reason
