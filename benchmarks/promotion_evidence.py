"""The numbers a promotion rests on, measured the way the flow measures them, for one or more recipes.

    .venv/bin/python benchmarks/promotion_evidence.py [RECIPE ...] [--rounds N]

For each recipe (default: configs/digits_cnn.yaml and configs/text_transformer.yaml): train, export,
build the variants, check parity, then time in the same interleaved rounds (fresh process per
contender, A, B, C, A, B, C, ...) every passing variant, a stand-in champion (the fp32 export, as if
the last nightly had registered the plain export) and the framework baseline. Prints, per batch size:

    best variant vs framework:  <ratio>x [<low>, <high>]   (framework p50 / variant p50)
    candidate vs champion:      <ratio>x [<low>, <high>]   (champion p50 / candidate p50)

The ratio is the median over rounds of the per-round ratio; the interval is a 95% bootstrap over
rounds. An interval that contains 1 means "no difference this run can show". Rows whose per-round
p50s vary by more than benchmark.max_cv are marked noisy; the flow never promotes on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_RECIPES = ["configs/digits_cnn.yaml", "configs/text_transformer.yaml"]


def evidence(recipe_path: str, rounds: int | None, work: Path) -> dict:
    """Train and build as the flow does, then one interleaved set of rounds on the CPU."""
    from onnxforge import pipeline
    from onnxforge.promotion import best_per_provider
    from onnxforge.recipe import load_recipe
    from onnxforge.records import ChampionRecord
    from onnxforge.rounds import compare, describe, with_speedups

    overrides = {"benchmark.providers": "[CPUExecutionProvider]"}
    if rounds:
        overrides["benchmark.rounds"] = str(rounds)
    recipe = load_recipe(recipe_path, overrides)
    started = time.perf_counter()
    data = pipeline.prepare_data(recipe, work)
    trained = pipeline.train(recipe, data, work)
    fp32 = pipeline.export(recipe, trained, data, work)
    builds = pipeline.build_chain(
        recipe, fp32, lambda name, parent: pipeline.make_variant(recipe, name, parent, data, work)
    )
    artifacts = pipeline.built_artifacts(builds)
    parity = pipeline.check_parity(recipe, trained, artifacts, data)
    champion = ChampionRecord(  # as if the last nightly had registered the plain export
        version="0",
        aliases=("champion",),
        variant="fp32",
        sha256=fp32.sha256,
        path=fp32.path,
        verified=True,
        size_bytes=fp32.size_bytes,
    )
    contenders = pipeline.contenders_of(trained, artifacts, parity, (champion,))
    rows = with_speedups(pipeline.benchmark(recipe, contenders, "CPUExecutionProvider", data, work))
    best = best_per_provider(recipe.registry.objective, artifacts, parity, rows)[
        "CPUExecutionProvider"
    ][0]
    lines, numbers = [], {}
    for size in recipe.benchmark.batch_sizes:
        mine = next(
            r for r in rows if r.variant == best and r.source == "run" and r.batch_size == size
        )
        for other in rows:
            if other.batch_size == size and other.source in ("framework", "champion"):
                comparison = compare(mine, other)
                if comparison is None:
                    continue
                what = "vs framework" if other.source == "framework" else "vs champion (fp32)"
                lines.append(f"  bs{size} {best} {what}: {describe(comparison)}")
                numbers[f"bs{size}.{other.source}"] = [
                    comparison.ratio,
                    comparison.low,
                    comparison.high,
                ]
    noisy = [f"{r.variant} bs{r.batch_size} (round cv {r.round_cv:.2f})" for r in rows if r.noisy]
    print(f"{recipe_path}: best variant {best}; {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    print(f"  noisy rows: {', '.join(noisy) or 'none'}")
    return {"recipe": recipe_path, "best": best, "ratios": numbers, "noisy": noisy}


def main() -> None:
    """Measure each recipe; the last line is one JSON object with every ratio and interval."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=DEFAULT_RECIPES)
    parser.add_argument("--rounds", type=int, default=None, help="override benchmark.rounds")
    args = parser.parse_args()
    results = []
    for recipe_path in args.recipes:
        with tempfile.TemporaryDirectory() as work:
            results.append(evidence(recipe_path, args.rounds, Path(work)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
