"""Benchmark tasks: interleaved rounds per provider, and the readable report."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.bench_report import publish_bench_report
from onnxforge.benchmark import benchmark_inputs, holds_baseline
from onnxforge.data_record import DataRecord
from onnxforge.dispatch import RoundFiles, ship_request, where_measured
from onnxforge.metrics import bench_metrics
from onnxforge.pipeline import benchmark
from onnxforge.profiles import labelled
from onnxforge.recipe import Recipe
from onnxforge.records import BenchContenders, BenchResult, ParityResult
from onnxforge.rounds import with_speedups
from onnxforge.tracking import RunContext, client, log_metrics
from tasks.cache import MLFLOW_IO_RETRIES
from tasks.dispatch import dispatch
from tasks.locks import bench_host_lock


@task(name="benchmark-provider", cache_policy=NO_CACHE, task_run_name="benchmark-{provider}")
def benchmark_provider(
    recipe: Recipe,
    contenders: BenchContenders,
    provider: str,
    data: DataRecord,
    context: RunContext,
) -> list[BenchResult]:
    """Passing variants, the champion and (on one provider) the framework, in interleaved rounds."""
    pool = recipe.benchmark.pools.get(provider)
    if pool is not None:
        rows = _dispatched(recipe, contenders, provider, data, context, pool)
    else:
        with bench_host_lock():  # one measurement at a time per host, across runs on this server
            rows = benchmark(recipe, contenders, provider, data, Path(context.work_dir))
        rows = [row.model_copy(update=where_measured()) for row in rows]
    # One line per contender, not per batch size: the reason is the same for each.
    named = ((labelled(r.variant, r.profile), r.status, r.reason) for r in rows)
    for variant, status, reason in dict.fromkeys(named):
        if status != "ok":
            get_run_logger().warning("%s on %s: %s (%s)", variant, provider, status, reason)
    for row in rows:
        if row.noisy:
            get_run_logger().warning(
                "%s on %s bs%d is noisy (round cv %.2f > %.2f): it wins only where its whole "
                "interval is faster",
                labelled(row.variant, row.profile),
                provider,
                row.batch_size,
                row.round_cv,
                recipe.benchmark.max_cv,
            )
    return rows


def _dispatched(
    recipe: Recipe,
    contenders: BenchContenders,
    provider: str,
    data: DataRecord,
    context: RunContext,
    pool: str,
) -> list[BenchResult]:
    """`provider`'s rounds on a worker of `pool`: files shipped by URI, rows back via MLflow."""
    features = benchmark_inputs(data, Path(context.work_dir))
    trained = contenders.trained
    with_baseline = holds_baseline(recipe.benchmark, provider)
    checkpoint = (trained.checkpoint, trained.checkpoint_sha256) if with_baseline else None
    mlflow_client = client(context.tracking_uri)
    started = time.monotonic()  # shipping the files is part of what dispatching costs
    artifacts, champions = list(contenders.artifacts), list(contenders.champions)
    files = RoundFiles(artifacts, champions, features, checkpoint, data, contenders.passed)
    request = ship_request(recipe, provider, pool, files, mlflow_client, context.run_id)
    spec = recipe.benchmark
    get_run_logger().info("benchmark on %s dispatched to work pool %s", provider, pool)
    outcome = dispatch(
        request, spec.dispatch_start_timeout_s, spec.dispatch_timeout_s, mlflow_client
    )
    wall_s = time.monotonic() - started
    if outcome.measure_s:
        get_run_logger().info(
            "%s measured by flow run %s on pool %s: %.1f s in all, %.1f s of it on the worker",
            provider,
            outcome.flow_run_id,
            pool,
            wall_s,
            outcome.measure_s,
        )
        # How much dispatching costs on top of the measurement (bench_dispatch.* metrics).
        prefix = f"bench_dispatch.{provider}"
        log_metrics(context, {f"{prefix}.wall_s": wall_s, f"{prefix}.measure_s": outcome.measure_s})
    return outcome.rows


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
