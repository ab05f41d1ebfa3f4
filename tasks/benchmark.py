"""Benchmark tasks: interleaved rounds per provider, and the readable report."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.bench_report import publish_bench_report
from onnxforge.benchmark import baseline_provider, bench_provider, benchmark_inputs
from onnxforge.data_record import DataRecord
from onnxforge.metrics import bench_metrics
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ChampionRecord, ModelArtifact, ParityResult, TrainResult
from onnxforge.rounds import with_speedups
from onnxforge.tracking import RunContext, log_metrics
from tasks.cache import MLFLOW_IO_RETRIES
from tasks.locks import bench_host_lock


@task(name="benchmark-provider", cache_policy=NO_CACHE, task_run_name="benchmark-{provider}")
def benchmark_provider(
    recipe: Recipe,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    champions: list[ChampionRecord],
    provider: str,
    data: DataRecord,
    context: RunContext,
) -> list[BenchResult]:
    """Passing variants, the champion and (on one provider) the framework, in interleaved rounds."""
    features = benchmark_inputs(recipe, Path(context.work_dir), data)
    with_baseline = recipe.benchmark.baseline and provider == baseline_provider(recipe)
    checkpoint = trained.checkpoint if with_baseline else None
    with bench_host_lock():  # one measurement at a time per host, across runs on this server
        rows = bench_provider(recipe, provider, artifacts, champions, checkpoint, features, data)
    # One line per contender, not per batch size: the reason is the same for each.
    for variant, status, reason in dict.fromkeys((r.variant, r.status, r.reason) for r in rows):
        if status != "ok":
            get_run_logger().warning("%s on %s: %s (%s)", variant, provider, status, reason)
    for row in rows:
        if row.noisy:
            get_run_logger().warning(
                "%s on %s bs%d is noisy (round cv %.2f > %.2f): it decides nothing",
                row.variant,
                provider,
                row.batch_size,
                row.round_cv,
                recipe.benchmark.max_cv,
            )
    return rows


@task(name="benchmark-report", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def benchmark_report(
    recipe: Recipe, rows: list[BenchResult], parity: list[ParityResult], context: RunContext
) -> list[BenchResult]:
    """Speedups and metrics, then the CSV/JSON table and PNG plots, to the MLflow run."""
    rows = with_speedups(rows)
    log_metrics(context, bench_metrics(rows))
    out_dir = Path(context.work_dir) / "benchmark"
    objective = recipe.registry.objective
    publish_bench_report(rows, parity, objective, out_dir, context.tracking_uri, context.run_id)
    return rows
