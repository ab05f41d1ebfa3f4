"""The report task: the summary as MLflow artifacts and as Prefect markdown and link artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from onnxforge.records import BenchResult, ParityResult, Registration, TrainResult, VariantBuild
from onnxforge.report import summary_json, summary_markdown
from onnxforge.tracking import RunContext, client, run_url


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(
    trained: TrainResult,
    builds: list[VariantBuild],
    parity: list[ParityResult],
    bench: list[BenchResult],
    registration: Registration,
    context: RunContext,
) -> str:
    """Write summary.md / summary.json to the MLflow run and show them in the Prefect UI."""
    url = run_url(context)
    markdown = summary_markdown(builds, parity, bench, registration, url)
    report = summary_json(
        trained=trained, builds=builds, parity=parity, bench=bench, registration=registration
    )
    mlflow_client = client(context.tracking_uri)
    mlflow_client.log_text(context.run_id, markdown, "summary.md")
    mlflow_client.log_text(context.run_id, report, "summary.json")
    create_markdown_artifact(markdown, key="onnxforge-summary", description="variant by provider")
    create_link_artifact(url, link_text="MLflow run", key="onnxforge-mlflow-run")
    return markdown
