"""The one naming scheme for metrics: train.*, parity.<variant>.*, bench.<variant>.<provider>.bs<N>.*"""

from __future__ import annotations

from typing import Any

from onnxforge.profiles import labelled
from onnxforge.providers import PROVIDERS
from onnxforge.records import BenchResult, ParityResult

PARITY_FIELDS = (
    "max_abs_err",
    "mean_abs_err",
    "max_spread_err",
    "mean_spread_err",
    "top1_agreement",
    "accuracy",
    "source_accuracy",
    "mae",
    "rmse",
    "source_mae",
    "source_rmse",
)
BENCH_FIELDS = (
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "cv",
    "throughput",
    "session_ms",
    "peak_rss_increase_mb",
    "speedup",
    "speedup_low",
    "speedup_high",
    "round_cv",
)


def provider_short(provider: str) -> str:
    """`cpu` for CPUExecutionProvider; the framework baseline keeps its own name."""
    spec = PROVIDERS.get(provider)
    return spec.short if spec else provider


def parity_metrics(results: list[ParityResult]) -> dict[str, float]:
    """parity.<variant>.<field> for every measured field, plus parity.<variant>.passed; under
    a runtime profile other than the default the variant is named `<variant>/<profile>`."""
    metrics: dict[str, float] = {}
    for result in results:
        named = labelled(result.variant, result.profile)
        metrics[f"parity.{named}.passed"] = float(result.passed)
        for name in PARITY_FIELDS:
            value = getattr(result, name)
            if value is not None:
                metrics[f"parity.{named}.{name}"] = value
    return metrics


def bench_metrics(rows: list[BenchResult]) -> dict[str, float]:
    """bench.<variant>.<provider>.bs<N>.<field> for every row that ran (`<variant>/<profile>`
    under a runtime profile other than the default)."""
    metrics: dict[str, float] = {}
    for row in rows:
        if row.status != "ok":
            continue
        named = labelled(row.variant, row.profile)
        prefix = f"bench.{named}.{provider_short(row.provider)}.bs{row.batch_size}"
        for name in BENCH_FIELDS:
            value = getattr(row, name)
            if value is not None:
                metrics[f"{prefix}.{name}"] = value
    return metrics


def objective_key(objective: Any) -> str:
    """The objective (register.objective) as a name, e.g. `cpu.bs1.p50_ms` or `size_bytes`."""
    if objective.metric == "size_bytes":
        return "size_bytes"
    return f"{provider_short(objective.provider)}.bs{objective.batch_size}.{objective.metric}"
