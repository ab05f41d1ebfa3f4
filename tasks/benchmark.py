"""Benchmark tasks: one per provider, and one for the source framework's baseline."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.benchmark import bench_framework, bench_provider
from onnxforge.metrics import bench_metrics
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ModelArtifact, TrainResult
from onnxforge.tracking import RunContext, log_metrics


@task(name="benchmark-provider", cache_policy=NO_CACHE, task_run_name="benchmark-{provider}")
def benchmark_provider(
    recipe: Recipe, artifacts: list[ModelArtifact], provider: str, context: RunContext
) -> list[BenchResult]:
    """Every passing variant on one provider; unavailable or rejecting providers are rows too."""
    rows = bench_provider(recipe, artifacts, provider)
    log_metrics(context, bench_metrics(rows))
    for row in rows:
        if row.status != "ok":
            get_run_logger().warning(
                "%s on %s: %s (%s)", row.variant, provider, row.status, row.reason
            )
    return rows


@task(name="benchmark-baseline", cache_policy=NO_CACHE)
def benchmark_baseline(
    recipe: Recipe, trained: TrainResult, context: RunContext
) -> list[BenchResult]:
    """The source framework's own latency, measured by the same loop."""
    if not recipe.benchmark.baseline:
        return []
    rows = bench_framework(recipe, trained.checkpoint)
    log_metrics(context, bench_metrics(rows))
    return rows
