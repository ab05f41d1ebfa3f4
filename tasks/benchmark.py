"""Benchmark tasks: interleaved rounds per provider, and the readable report."""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from onnxforge.bench_report import bench_table, plot_accuracy_latency, plot_latency, write_tables
from onnxforge.benchmark import baseline_provider, bench_provider, benchmark_inputs
from onnxforge.metrics import bench_metrics
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ChampionRecord, ModelArtifact, ParityResult, TrainResult
from onnxforge.rounds import with_speedups
from onnxforge.tracking import RunContext, client, log_metrics


@task(name="benchmark-provider", cache_policy=NO_CACHE, task_run_name="benchmark-{provider}")
def benchmark_provider(
    recipe: Recipe,
    trained: TrainResult,
    artifacts: list[ModelArtifact],
    champions: list[ChampionRecord],
    provider: str,
    context: RunContext,
) -> list[BenchResult]:
    """Passing variants, the champion and (on one provider) the framework, in interleaved rounds."""
    features = benchmark_inputs(recipe, Path(context.work_dir))
    with_baseline = recipe.benchmark.baseline and provider == baseline_provider(recipe)
    checkpoint = trained.checkpoint if with_baseline else None
    rows = bench_provider(recipe, provider, artifacts, champions, checkpoint, features)
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


@task(name="benchmark-report", cache_policy=NO_CACHE)
def benchmark_report(
    recipe: Recipe, rows: list[BenchResult], parity: list[ParityResult], context: RunContext
) -> list[BenchResult]:
    """Speedups, metrics, CSV/JSON table and PNG plots to MLflow; table and plots to Prefect."""
    rows = with_speedups(rows)
    log_metrics(context, bench_metrics(rows))
    out_dir = Path(context.work_dir) / "benchmark"
    table = bench_table(rows, parity)
    objective = recipe.registry.objective
    plots = [
        plot_latency(rows, out_dir / "latency_by_batch.png"),
        plot_accuracy_latency(
            rows,
            parity,
            objective.provider,
            objective.batch_size,
            out_dir / "accuracy_vs_latency.png",
        ),
    ]
    mlflow_client = client(context.tracking_uri)
    for path in [*write_tables(table, out_dir), *plots]:
        mlflow_client.log_artifact(context.run_id, str(path), "benchmark")
    create_table_artifact(
        table, key="onnxforge-benchmark", description="contender x provider x batch, interleaved"
    )
    images = "\n\n".join(
        f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
        for p in plots
    )
    create_markdown_artifact(images, key="onnxforge-benchmark-plots", description="benchmark plots")
    return rows
