"""Numbers from interleaved rounds: per-row statistics, and ratios with bootstrap intervals.

On a shared 2-core machine, a baseline measured minutes apart from its contender read 14.1 ms in
one run and 436 ms in another (coefficient of variation above 1), so a ratio of two rows taken at
different times says nothing. Contenders are therefore timed in rounds (A, B, C, A, B, C, ...) and
compared round by round: the per-round ratio cancels whatever slowed the machine during that round,
and resampling the rounds (bootstrap) says how far the median ratio can be trusted.
"""

from __future__ import annotations

import numpy as np

from onnxforge.profiles import labelled
from onnxforge.records import BenchResult, Comparison

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


def summarize(timings_ms: list[float], batch_size: int) -> dict[str, float]:
    """Percentiles, mean, spread and throughput of one contender's pooled timed runs."""
    values = np.asarray(timings_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    mean, std = float(values.mean()), float(values.std())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean else 0.0,
        "throughput": batch_size * 1000.0 / mean if mean else 0.0,
        "iterations": int(values.size),
    }


def ratio_interval(
    reference: tuple[float, ...], contender: tuple[float, ...], seed: int = 0
) -> tuple[float, float, float]:
    """Median of reference/contender over paired rounds, and its 95% bootstrap interval."""
    pairs = min(len(reference), len(contender))
    if pairs == 0:
        raise ValueError("no paired rounds to compare")
    ratios = np.asarray(reference[:pairs]) / np.asarray(contender[:pairs])
    rng = np.random.default_rng(seed)  # seeded: the same rounds always give the same interval
    picks = rng.integers(0, pairs, size=(BOOTSTRAP_SAMPLES, pairs))
    medians = np.median(ratios[picks], axis=1)
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(np.median(ratios)), float(low), float(high)


def compare(contender: BenchResult, reference: BenchResult) -> Comparison | None:
    """reference p50 / contender p50 from the same rounds; None unless both rows measured."""
    if contender.status != "ok" or reference.status != "ok":
        return None
    if not contender.round_p50_ms or not reference.round_p50_ms:
        return None
    if contender.group != reference.group:  # other rounds, other moments: not comparable
        return None
    ratio, low, high = ratio_interval(reference.round_p50_ms, contender.round_p50_ms)
    return Comparison(
        provider=contender.provider,
        batch_size=contender.batch_size,
        contender=labelled(contender.variant, contender.profile),
        reference=labelled(reference.variant, reference.profile),
        ratio=ratio,
        low=low,
        high=high,
        rounds=min(len(contender.round_p50_ms), len(reference.round_p50_ms)),
        noisy=contender.noisy or reference.noisy,
    )


def describe(comparison: Comparison) -> str:
    """e.g. `1.32x [1.20, 1.41] at cpu bs1 over 6 rounds`."""
    from onnxforge.metrics import provider_short

    noisy = " (noisy)" if comparison.noisy else ""
    return (
        f"{comparison.ratio:.3g}x [{comparison.low:.3g}, {comparison.high:.3g}] at "
        f"{provider_short(comparison.provider)} bs{comparison.batch_size} over "
        f"{comparison.rounds} rounds{noisy}"
    )


def with_speedups(rows: list[BenchResult]) -> list[BenchResult]:
    """Each row with its speedup over the framework baseline measured in the same rounds."""
    baseline = {r.batch_size: r for r in rows if r.source == "framework" and r.status == "ok"}
    updated = []
    for row in rows:
        reference = baseline.get(row.batch_size)
        comparison = None
        if row.source != "framework" and reference is not None:
            comparison = compare(row, reference)
        if comparison is None:
            updated.append(row)
            continue
        updated.append(
            row.model_copy(
                update={
                    "speedup": comparison.ratio,
                    "speedup_low": comparison.low,
                    "speedup_high": comparison.high,
                }
            )
        )
    return updated
