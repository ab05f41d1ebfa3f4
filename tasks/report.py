"""The report task: the summary as MLflow artifacts (tasks/outcome.py shows it in Prefect)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from onnxforge.records import BenchResult, ParityResult, Registration, TrainResult, VariantBuild
from onnxforge.report import publish_summary_files
from onnxforge.tracking import RunContext
from tasks.cache import MLFLOW_IO_RETRIES


@task(name="publish-summary", cache_policy=NO_CACHE, **MLFLOW_IO_RETRIES)
def publish_summary(
    trained: TrainResult,
    builds: list[VariantBuild],
    parity: list[ParityResult],
    bench: list[BenchResult],
    registration: Registration,
    context: RunContext,
) -> str:
    """Write summary.md / summary.json to the MLflow run; returns the markdown."""
    return publish_summary_files(context, trained, builds, parity, bench, registration)
