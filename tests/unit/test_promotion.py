"""The promotion policy: champion moves only on this run's evidence, outside the noise."""

from __future__ import annotations

import pytest

from onnxforge.promotion import Candidate, alias_targets, decide, propose
from onnxforge.records import (
    BenchResult,
    ChampionRecord,
    ModelArtifact,
    ParityResult,
    RunEvidence,
    TrainResult,
)

TRAINED = TrainResult(
    checkpoint="model.pt",
    checkpoint_sha256="c" * 64,
    dataset_hash="d" * 64,
    epochs_run=1,
    val_accuracy=0.9,
    test_accuracy=0.9,
    seconds=1.0,
)
CPU = "CPUExecutionProvider"


def artifact(variant: str = "int8-dynamic", sha: str = "a" * 64, size: int = 100) -> ModelArtifact:
    return ModelArtifact(
        path=f"/x/{variant}.onnx",
        sha256=sha,
        variant=variant,
        parent="fp32",
        producer="test",
        opset=18,
        size_bytes=size,
    )


def passed(variant: str = "int8-dynamic", accuracy: float = 0.97) -> ParityResult:
    return ParityResult(variant=variant, passed=True, accuracy=accuracy)


def champion(accuracy: float = 0.97, **update) -> ChampionRecord:
    record = ChampionRecord(
        version="3",
        aliases=("champion", "champion-cpu"),
        variant="fp32",
        sha256="b" * 64,
        path="/x/champion.onnx",
        verified=True,
        size_bytes=400,
        evaluation=ParityResult(variant="champion-v3", passed=True, accuracy=accuracy),
    )
    return record.model_copy(update=update)


def row(variant: str, source: str, rounds: tuple[float, ...], batch: int = 1, noisy=False):
    return BenchResult(
        variant=variant,
        provider=CPU,
        batch_size=batch,
        status="ok",
        p50_ms=sorted(rounds)[len(rounds) // 2],
        round_p50_ms=rounds,
        noisy=noisy,
        source=source,
        group=CPU,
    )


FAST = (1.0, 1.1, 0.9, 1.0, 1.05, 0.95)
SLOW = (2.0, 2.1, 1.9, 2.0, 2.05, 1.95)
SAME = (1.0, 1.02, 0.99, 1.01, 1.0, 0.98)
SWINGING = (1.0, 3.0, 0.9, 2.9, 1.1, 3.1)  # twice as slow in half the rounds: round cv ~0.5


def test_no_champion_means_promote(digits_recipe) -> None:
    assert decide(digits_recipe.registry, CPU, Candidate(artifact(), passed()), None, []) == (
        True,
        "no champion yet",
    )


def test_a_floor_blocks_even_a_first_champion(digits_recipe) -> None:
    move, reason = decide(
        digits_recipe.registry,
        CPU,
        Candidate(artifact(), passed(), ("accuracy 0.1 ...",)),
        None,
        [],
    )
    assert not move and reason.startswith("below a quality floor: accuracy 0.1")


def test_faster_with_the_whole_interval_clear_of_the_margin_promotes(digits_recipe) -> None:
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SLOW)]
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(), passed()), champion(), bench
    )
    assert move and reason.startswith("faster than champion v3: 2") and "over 6 rounds" in reason


def test_a_difference_inside_the_noise_keeps_the_champion(digits_recipe) -> None:
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SAME)]
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(), passed()), champion(), bench
    )
    assert not move and reason.startswith("within noise of champion v3")


def test_a_noisy_row_whose_whole_interval_is_faster_still_decides(digits_recipe) -> None:
    # The rule by intervals: per-round noise is already inside the bootstrap interval.
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SLOW, noisy=True)]
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(), passed()), champion(), bench
    )
    assert move and reason.startswith("faster than champion v3") and "(noisy)" in reason


def test_too_noisy_to_decide_only_when_the_interval_straddles_the_margin(digits_recipe) -> None:
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SWINGING, noisy=True)]
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(), passed()), champion(), bench
    )
    assert not move and reason.startswith("too noisy to decide")


def test_an_accuracy_drop_measured_on_this_split_keeps_the_champion(digits_recipe) -> None:
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SLOW)]
    move, reason = decide(
        digits_recipe.registry,
        CPU,
        Candidate(artifact(), passed(accuracy=0.95)),
        champion(accuracy=0.97),
        bench,
    )
    assert not move and "below champion v3's 0.9700 on this run's test split" in reason


def test_a_regression_on_another_batch_size_keeps_the_champion(digits_recipe) -> None:
    bench = [
        row("int8-dynamic", "run", FAST),
        row("champion-v3", "champion", SLOW),
        row("int8-dynamic", "run", SLOW, batch=16),
        row("champion-v3", "champion", FAST, batch=16),
    ]
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(), passed()), champion(), bench
    )
    assert not move and reason.startswith("slower than champion v3 by more than 10%")
    assert "bs16" in reason


def test_the_same_file_is_not_a_new_champion(digits_recipe) -> None:
    move, reason = decide(
        digits_recipe.registry, CPU, Candidate(artifact(sha="b" * 64), passed()), champion(), []
    )
    assert not move and reason == "identical to champion v3 (same sha256)"


def test_a_tampered_champion_is_replaced(digits_recipe) -> None:
    broken = champion(verified=False, tampered=True, path=None, reason="sha256 mismatch")
    move, reason = decide(digits_recipe.registry, CPU, Candidate(artifact(), passed()), broken, [])
    assert move and "failed verification (sha256 mismatch)" in reason


def test_a_champion_with_no_sha256_to_check_needs_a_human(digits_recipe) -> None:
    unknown = champion(verified=False, path=None, reason="expected <no sha256 tag>")
    move, reason = decide(digits_recipe.registry, CPU, Candidate(artifact(), passed()), unknown, [])
    assert not move and reason.endswith("promote by hand")


def test_a_noisy_row_with_its_whole_interval_faster_is_picked(digits_recipe) -> None:
    from onnxforge.promotion import best_per_provider

    bench = [row("simplified", "run", SLOW), row("int8-dynamic", "run", FAST, noisy=True)]
    parity = [passed("simplified"), passed("int8-dynamic")]
    artifacts = [artifact("simplified"), artifact("int8-dynamic")]
    pick = best_per_provider(digits_recipe.registry.objective, artifacts, parity, bench)[CPU]
    assert pick.variant == "int8-dynamic" and "over its whole interval" in pick.note


def test_a_noisy_row_inside_the_calm_ones_interval_keeps_the_calm_row(digits_recipe) -> None:
    from onnxforge.promotion import best_per_provider

    calm = (1.2, 1.21, 1.19, 1.2, 1.22, 1.18)
    bench = [row("simplified", "run", calm), row("int8-dynamic", "run", SWINGING, noisy=True)]
    bench[1] = bench[1].model_copy(update={"p50_ms": 1.05})  # lower point estimate, wide rounds
    parity = [passed("simplified"), passed("int8-dynamic")]
    artifacts = [artifact("simplified"), artifact("int8-dynamic")]
    pick = best_per_provider(digits_recipe.registry.objective, artifacts, parity, bench)[CPU]
    assert pick.variant == "simplified" and pick.note.startswith("too noisy to decide")


def test_the_pick_names_its_runtime_profile(digits_recipe) -> None:
    from onnxforge.promotion import best_per_provider

    remedy = row("int8-dynamic", "run", FAST).model_copy(update={"profile": "no-skiplayernorm"})
    bench = [row("int8-dynamic", "run", SLOW), remedy]
    parity = [passed(), passed().model_copy(update={"profile": "no-skiplayernorm"})]
    pick = best_per_provider(digits_recipe.registry.objective, [artifact()], parity, bench)[CPU]
    assert (pick.variant, pick.profile) == ("int8-dynamic", "no-skiplayernorm")
    # a profile the variant failed parity under is never picked, however fast
    failing = [
        passed(),
        ParityResult(variant="int8-dynamic", passed=False, profile="no-skiplayernorm"),
    ]
    pick = best_per_provider(digits_recipe.registry.objective, [artifact()], failing, bench)[CPU]
    assert pick.profile == "default"


def test_a_champion_that_cannot_run_on_this_data_needs_a_human(digits_recipe) -> None:
    other = champion(evaluation=None, reason="it does not run on this run's inputs")
    move, reason = decide(digits_recipe.registry, CPU, Candidate(artifact(), passed()), other, [])
    assert not move and reason.endswith("promote by hand")


def test_propose_gives_champion_per_provider_aliases_and_challenger(digits_recipe) -> None:
    assert alias_targets(digits_recipe) == [
        ("champion", CPU),
        ("champion-cpu", CPU),
        ("champion-cuda", "CUDAExecutionProvider"),
    ]
    bench = [row("int8-dynamic", "run", FAST), row("champion-v3", "champion", SLOW)]
    evidence = RunEvidence(
        trained=TRAINED,
        artifacts=(artifact(),),
        parity=(passed(),),
        bench=tuple(bench),
        champions=(champion(),),
    )
    decisions = propose(digits_recipe, evidence, {})
    by_alias = {d.alias: d for d in decisions}
    assert by_alias["champion"].move and by_alias["champion-cpu"].move
    assert by_alias["champion"].against == "3"
    assert not by_alias["champion-cuda"].move and by_alias["champion-cuda"].variant is None
    assert by_alias["challenger"].move and by_alias["challenger"].variant == "int8-dynamic"


@pytest.mark.parametrize("metric", ["size_bytes"])
def test_a_size_objective_compares_file_sizes(digits_recipe, metric: str) -> None:
    recipe = digits_recipe.model_copy(
        update={
            "registry": digits_recipe.registry.model_copy(
                update={
                    "objective": digits_recipe.registry.objective.model_copy(
                        update={"metric": metric}
                    )
                }
            )
        }
    )
    move, reason = decide(
        recipe.registry, CPU, Candidate(artifact(size=100), passed()), champion(), []
    )
    assert move and reason.startswith("smaller than champion v3")


def test_the_smallest_file_wins_the_size_objective_however_noisy_its_timing(digits_recipe) -> None:
    from onnxforge.promotion import best_per_provider
    from onnxforge.recipe import Objective

    calm = (1.2, 1.21, 1.19, 1.2, 1.22, 1.18)
    bench = [row("simplified", "run", calm), row("int8-dynamic", "run", SWINGING, noisy=True)]
    parity = [passed("simplified"), passed("int8-dynamic")]
    artifacts = [artifact("simplified", size=400), artifact("int8-dynamic", size=100)]
    size = Objective(metric="size_bytes")
    pick = best_per_provider(size, artifacts, parity, bench)[CPU]
    assert (pick.variant, pick.value, pick.note) == ("int8-dynamic", 100.0, "")
