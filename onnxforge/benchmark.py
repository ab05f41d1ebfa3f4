"""Latency of each variant on a provider, and of the source framework as the baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from onnxforge.providers import PROVIDERS
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import BenchResult, ModelArtifact
from onnxforge.runtime import ProviderRejected, make_session
from onnxforge.variants import VARIANTS


def latency_stats(
    call: Callable[[], Any], warmup: int, iterations: int, batch: int
) -> dict[str, float]:
    """Warm up, then time `iterations` calls: percentiles, mean and items per second."""
    for _ in range(warmup):
        call()
    timings = np.empty(iterations)
    for index in range(iterations):
        started = time.perf_counter()
        call()
        timings[index] = (time.perf_counter() - started) * 1000.0
    p50, p90, p99 = np.percentile(timings, [50, 90, 99])
    mean = float(timings.mean())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "throughput": batch * 1000.0 / mean,
    }


def make_batch(features: np.ndarray, batch_size: int) -> np.ndarray:
    """`batch_size` samples from `features`, repeated if there are too few."""
    reps = -(-batch_size // len(features))
    return np.ascontiguousarray(np.concatenate([features] * reps)[:batch_size])


def bench_variant(
    artifact: ModelArtifact, provider: str, features: np.ndarray, spec: BenchmarkSpec
) -> list[BenchResult]:
    """One row per batch size: ok with timings, skipped (unavailable) or unsupported (rejected)."""
    provider_spec = PROVIDERS[provider]
    base = {"variant": artifact.variant, "provider": provider, "size_bytes": artifact.size_bytes}
    reason = provider_spec.unavailable_reason()
    status = "skipped"
    if reason is None and not provider_spec.can_run(VARIANTS[artifact.variant].device):
        reason, status = (
            f"{artifact.variant} is a GPU variant; {provider} has no kernels for it",
            "unsupported",
        )
    session = None
    if reason is None:
        started = time.perf_counter()
        try:
            session = make_session(
                artifact.path, provider, spec.intra_op_threads, spec.inter_op_threads
            )
        except ProviderRejected as error:
            reason, status = str(error), "unsupported"
        session_ms = (time.perf_counter() - started) * 1000.0
    if session is None:
        return [
            BenchResult(**base, batch_size=size, status=status, reason=reason or "")
            for size in spec.batch_sizes
        ]
    input_name = session.get_inputs()[0].name
    rows = []
    for size in spec.batch_sizes:
        feed = {input_name: make_batch(features, size)}
        stats = latency_stats(
            lambda f=feed: session.run(None, f), spec.warmup, spec.iterations, size
        )
        rows.append(
            BenchResult(**base, batch_size=size, status="ok", session_ms=session_ms, **stats)
        )
    return rows


def bench_framework(recipe: Recipe, checkpoint: str) -> list[BenchResult]:
    """The source model in its own framework, timed by the same loop as the ONNX variants."""
    from onnxforge.adapters import get_adapter
    from onnxforge.datasets import load_splits
    from onnxforge.training import load_source_model

    spec = recipe.benchmark
    splits = load_splits(recipe.dataset)
    model = load_source_model(recipe, checkpoint, splits)
    adapter = get_adapter(recipe.model.framework)
    rows = []
    for size in spec.batch_sizes:
        call = adapter.latency_callable(
            model, make_batch(splits.x_test, size), spec.intra_op_threads
        )
        stats = latency_stats(call, spec.warmup, spec.iterations, size)
        rows.append(
            BenchResult(
                variant=f"{recipe.model.framework}-eager",
                provider="framework",
                batch_size=size,
                status="ok",
                **stats,
            )
        )
    return rows


def bench_provider(
    recipe: Recipe, artifacts: list[ModelArtifact], provider: str
) -> list[BenchResult]:
    """Every given variant on one provider, one after another (never concurrently)."""
    from onnxforge.datasets import load_splits

    features = load_splits(recipe.dataset).x_test
    return [
        row
        for artifact in artifacts
        for row in bench_variant(artifact, provider, features, recipe.benchmark)
    ]
