"""Latency of each variant on a provider, and of the source framework as the baseline.

Every measurement runs in a fresh process (onnxforge.bench_worker), one at a time on the
machine (a file lock in the state folder), so measurements do not disturb each other.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.inputs import save as save_features
from onnxforge.providers import PROVIDERS
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import BenchResult, ModelArtifact, write_atomically
from onnxforge.variants import VARIANTS

MIN_BUDGET_ITERATIONS = 10
MEASURE_TIMEOUT_S = 900


def latency_stats(
    call: Callable[[], Any],
    warmup: int,
    iterations: int,
    batch: int,
    time_budget_s: float | None = None,
) -> dict[str, float]:
    """Warm up, then time `iterations` calls (or as many as fit the time budget)."""
    for _ in range(warmup):
        call()
    timings: list[float] = []
    deadline = time.perf_counter() + time_budget_s if time_budget_s else None
    while True:
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000.0)
        if deadline is None and len(timings) >= iterations:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            if len(timings) >= MIN_BUDGET_ITERATIONS:
                break
    values = np.asarray(timings)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    mean, std = float(values.mean()), float(values.std())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean else 0.0,
        "throughput": batch * 1000.0 / mean,
        "iterations": len(values),
    }


def measure_isolated(request: dict[str, Any], lock_path: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter while holding the machine-wide lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        completed = subprocess.run(
            [sys.executable, "-m", "onnxforge.bench_worker"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=MEASURE_TIMEOUT_S,
        )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "error": f"worker exited {completed.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1])


def _request(spec: BenchmarkSpec, features: Path, batch_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "features": str(features),
        "batch_size": batch_size,
        "warmup": spec.warmup,
        "iterations": spec.iterations,
        "time_budget_s": spec.time_budget_s,
        "intra_op_threads": spec.intra_op_threads,
        "inter_op_threads": spec.inter_op_threads,
        **extra,
    }


def _row(
    base: dict[str, Any], spec: BenchmarkSpec, size: int, result: dict[str, Any]
) -> BenchResult:
    threads = {"intra_op_threads": spec.intra_op_threads, "inter_op_threads": spec.inter_op_threads}
    if not result["ok"]:
        return BenchResult(
            **base, **threads, batch_size=size, status="unsupported", reason=result["error"]
        )
    numbers = {k: v for k, v in result.items() if k != "ok"}
    return BenchResult(**base, **threads, batch_size=size, status="ok", **numbers)


def bench_variant(
    artifact: ModelArtifact, provider: str, features: Path, spec: BenchmarkSpec, lock_path: Path
) -> list[BenchResult]:
    """One row per batch size: ok with timings, skipped (unavailable) or unsupported (rejected)."""
    provider_spec = PROVIDERS[provider]
    base = {"variant": artifact.variant, "provider": provider, "size_bytes": artifact.size_bytes}
    reason, status = provider_spec.unavailable_reason(), "skipped"
    if reason is None and not provider_spec.can_run(VARIANTS[artifact.variant].device):
        reason, status = (
            f"{artifact.variant} is a GPU variant; {provider} has no kernels for it",
            "unsupported",
        )
    if reason is not None:
        return [
            BenchResult(**base, batch_size=s, status=status, reason=reason)
            for s in spec.batch_sizes
        ]
    rows = []
    for size in spec.batch_sizes:
        request = _request(spec, features, size, kind="onnx", path=artifact.path, provider=provider)
        rows.append(_row(base, spec, size, measure_isolated(request, lock_path)))
    return rows


def bench_framework(
    recipe: Recipe, checkpoint: str, features: Path, lock_path: Path
) -> list[BenchResult]:
    """The source model in its own framework, timed by the same harness as the ONNX variants."""
    spec = recipe.benchmark
    base = {"variant": f"{recipe.model.framework}-eager", "provider": "framework"}
    rows = []
    for size in spec.batch_sizes:
        request = _request(
            spec,
            features,
            size,
            kind="framework",
            checkpoint=checkpoint,
            recipe=recipe.model_dump(mode="json", by_alias=True),
        )
        rows.append(_row(base, spec, size, measure_isolated(request, lock_path)))
    return rows


def benchmark_inputs(recipe: Recipe, work_dir: Path) -> Path:
    """The test split's inputs as an .npz file that every measurement process reads."""
    from onnxforge.datasets import load_splits

    path = work_dir / "bench_features.npz"
    if not path.exists():
        features = load_splits(recipe.dataset).x_test
        write_atomically(path, lambda temp: save_features(features, temp))
    return path


def with_speedups(rows: list[BenchResult]) -> list[BenchResult]:
    """Each ok row with its speedup against the framework baseline at the same batch size."""
    baseline = {
        r.batch_size: r.p50_ms for r in rows if r.provider == "framework" and r.status == "ok"
    }
    return [
        row.model_copy(update={"speedup": baseline[row.batch_size] / row.p50_ms})
        if row.status == "ok" and row.batch_size in baseline and row.p50_ms
        else row
        for row in rows
    ]
