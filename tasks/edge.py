"""The edge task: every passing variant as an ORT-format bundle, checked and timed with one
thread; each file is logged into the run (edge/<variant>/) and its sha256 onto the version."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from onnxforge.data_record import DataRecord
from onnxforge.pipeline import edge
from onnxforge.recipe import Recipe
from onnxforge.records import BenchContenders, EdgeCandidate
from onnxforge.tracking import RunContext, client, log_metrics


@task(name="edge-bundles", cache_policy=NO_CACHE)
def edge_bundles(
    recipe: Recipe, contenders: BenchContenders, data: DataRecord, context: RunContext
) -> list[EdgeCandidate]:
    """Build, check and time the bundles; log their files and numbers to the run."""
    candidates = edge(recipe, contenders, data, Path(context.work_dir))
    mlflow_client = client(context.tracking_uri)
    logger = get_run_logger()
    metrics = {}
    for candidate in candidates:
        bundle, row = candidate.bundle, candidate.row
        for path in (bundle.ort_path, bundle.ops_config_path, bundle.usability_path):
            mlflow_client.log_artifact(context.run_id, path, f"edge/{bundle.label}")
        metrics[f"edge.{bundle.label}.parity_passed"] = float(candidate.parity.passed)
        metrics[f"edge.{bundle.label}.ort_size_bytes"] = float(bundle.ort_size_bytes)
        if row is not None and row.status == "ok":
            metrics[f"edge.{bundle.label}.p50_ms"] = row.p50_ms
            metrics[f"edge.{bundle.label}.peak_rss_increase_mb"] = row.peak_rss_increase_mb
        failures = [f.message for f in candidate.parity.failures]
        logger.info(
            "edge %s: .ort %d bytes (sha256 %s), parity %s%s; %s",
            bundle.label,
            bundle.ort_size_bytes,
            bundle.ort_sha256[:12],
            "pass" if candidate.parity.passed else f"FAIL {failures}",
            f", one thread bs1 p50 {row.p50_ms:.3f} ms" if row and row.status == "ok" else "",
            bundle.usability,
        )
    log_metrics(context, metrics)
    return candidates
