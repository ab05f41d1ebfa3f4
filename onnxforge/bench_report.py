"""Benchmark results a person can read: a CSV/JSON table and two PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from onnxforge.onnx_files import write_atomically
from onnxforge.profiles import labelled
from onnxforge.records import BenchResult, ParityResult

COLUMNS = (
    "variant",
    "profile",
    "source",
    "provider",
    "batch_size",
    "status",
    "p50_ms",
    "p99_ms",
    "throughput",
    "speedup",
    "speedup_low",
    "speedup_high",
    "rounds",
    "size_bytes",
    "parity",
    "cv",
    "round_cv",
    "noisy",
    "peak_rss_increase_mb",
    "reason",
    "group",
    "host",
    "pool",
    "worker",
)


def bench_table(rows: list[BenchResult], parity: list[ParityResult]) -> list[dict[str, Any]]:
    """One dict per (variant, provider, batch): the numbers, the speedup and the parity status."""
    status = {(p.variant, p.profile): "pass" if p.passed else "fail" for p in parity}
    table = []
    for row in rows:
        record = {name: getattr(row, name, None) for name in COLUMNS if name != "parity"}
        record["parity"] = {"framework": "baseline", "champion": "champion"}.get(
            row.source, status.get((row.variant, row.profile), "-")
        )
        table.append({name: record[name] for name in COLUMNS})
    return table


def write_tables(table: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """bench.csv and bench.json in `out_dir`."""

    def write_csv(temp: Path) -> None:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(table)

    csv_path = write_atomically(out_dir / "bench.csv", write_csv)
    json_path = write_atomically(
        out_dir / "bench.json", lambda t: t.write_text(json.dumps(table, indent=2))
    )
    return [csv_path, json_path]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def plot_latency(rows: list[BenchResult], path: Path) -> Path:
    """p50 latency against batch size, one line per (variant, provider)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    series = sorted(
        {(labelled(r.variant, r.profile), r.provider) for r in rows if r.status == "ok"}
    )
    for variant, provider in series:
        points = sorted(
            (r.batch_size, r.p50_ms)
            for r in rows
            if (labelled(r.variant, r.profile), r.provider, r.status) == (variant, provider, "ok")
        )
        axes.plot(*zip(*points, strict=True), marker="o", label=f"{variant} / {provider}")
    axes.set(xlabel="batch size", ylabel="p50 latency (ms)", title="Latency by batch size")
    axes.set_xscale("log", base=2)
    if series:  # a run where nothing measured still gets its (empty) plot, without a warning
        axes.legend(fontsize=8)
    figure.tight_layout()
    write_atomically(path, lambda temp: figure.savefig(temp, format="png", dpi=100))
    plt.close(figure)
    return path


def plot_accuracy_latency(
    rows: list[BenchResult], parity: list[ParityResult], provider: str, batch_size: int, path: Path
) -> Path:
    """Test accuracy against p50 latency on one provider and batch size, one point per variant."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    accuracy = {p.variant: p.accuracy for p in parity if p.accuracy is not None}
    source = next((p.source_accuracy for p in parity if p.source_accuracy is not None), None)
    for row in rows:
        if row.status != "ok" or row.batch_size != batch_size:
            continue
        if row.provider == "framework" and source is not None:
            axes.scatter(row.p50_ms, source, marker="s", color="black")
            axes.annotate(f"{row.variant} (baseline)", (row.p50_ms, source), fontsize=8)
        elif row.provider == provider and row.variant in accuracy:
            axes.scatter(row.p50_ms, accuracy[row.variant])
            axes.annotate(row.variant, (row.p50_ms, accuracy[row.variant]), fontsize=8)
    axes.set(
        xlabel=f"p50 latency (ms), {provider}, batch {batch_size}",
        ylabel="test accuracy",
        title="Accuracy against latency",
    )
    figure.tight_layout()
    write_atomically(path, lambda temp: figure.savefig(temp, format="png", dpi=100))
    plt.close(figure)
    return path


def publish_bench_report(
    rows: list[BenchResult],
    parity: list[ParityResult],
    objective: Any,
    out_dir: Path,
    tracking_uri: str,
    run_id: str,
) -> list[Path]:
    """bench.csv, bench.json and the two plots in `out_dir`, each logged to the MLflow run under
    `benchmark/`; returns the files."""
    from onnxforge.tracking import client

    table = bench_table(rows, parity)
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
    files = [*write_tables(table, out_dir), *plots]
    mlflow_client = client(tracking_uri)
    for path in files:
        mlflow_client.log_artifact(run_id, str(path), "benchmark")
    return files
