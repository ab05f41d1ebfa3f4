"""The run's summary: a markdown table (variant by provider) and a JSON report."""

from __future__ import annotations

import json
from typing import Any

from onnxforge.records import BenchResult, ParityResult, Registration, VariantBuild


def _parity_cell(result: ParityResult | None) -> str:
    if result is None:
        return "not checked"
    accuracy = f"acc {result.accuracy:.4f}" if result.accuracy is not None else ""
    if result.passed:
        return f"pass (max err {result.max_abs_err:.2g}{', ' + accuracy if accuracy else ''})"
    return (
        "FAIL"
        + (f" ({accuracy})" if accuracy else "")
        + ": "
        + "; ".join(f"{f.kind}: {f.message}" for f in result.failures)
    )


def _bench_cell(rows: list[BenchResult]) -> str:
    if not rows:
        return "-"
    if rows[0].status != "ok":
        return f"{rows[0].status}: {rows[0].reason}"
    return ", ".join(f"bs{r.batch_size} {r.p50_ms:.3f} ms" for r in rows)


def summary_markdown(
    builds: list[VariantBuild],
    parity: list[ParityResult],
    bench: list[BenchResult],
    registration: Registration,
    run_url: str,
) -> str:
    """Variant by provider: size, parity and p50 per batch size, then what was registered."""
    providers = sorted({row.provider for row in bench})
    parity_by_variant = {p.variant: p for p in parity}
    lines = [
        "# onnxforge run summary",
        "",
        "| variant | size (bytes) | parity | " + " | ".join(f"{p} p50" for p in providers) + " |",
        "|---|---|---|" + "---|" * len(providers),
    ]
    for build in builds:
        if build.artifact is None:
            lines.append(
                f"| {build.variant} | - | not built: {build.reason} |" + " - |" * len(providers)
            )
            continue
        cells = [
            _bench_cell([r for r in bench if r.variant == build.variant and r.provider == p])
            for p in providers
        ]
        lines.append(
            f"| {build.variant} | {build.artifact.size_bytes} | "
            f"{_parity_cell(parity_by_variant.get(build.variant))} | " + " | ".join(cells) + " |"
        )
    for variant in sorted({r.variant for r in bench if r.provider == "framework"}):
        rows = [r for r in bench if r.variant == variant]
        lines.append(
            f"| {variant} (baseline) | - | source | "
            + " | ".join(_bench_cell(rows) if p == "framework" else "-" for p in providers)
            + " |"
        )
    lines += _failure_details(parity)
    lines += ["", _registration_line(registration), "", f"MLflow run: {run_url}"]
    return "\n".join(lines)


def _failure_details(parity: list[ParityResult]) -> list[str]:
    """Per-output numbers of failing variants and, for int8 ones, the layers that drift most."""
    lines: list[str] = []
    for result in parity:
        if result.passed:
            continue
        lines += ["", f"**{result.variant}** failed parity:"]
        lines += [
            f"- {o.name}: max abs {o.max_abs_err:.3g}, mean abs {o.mean_abs_err:.3g}, "
            f"relative {o.rel_err:.3g}"
            for o in result.per_output
        ]
        if result.drifting_layers:
            lines.append(
                "- layers drifting most (lowest SQNR first; candidates for `nodes_to_exclude`): "
                + ", ".join(f"`{d.node}` ({d.sqnr_db:.1f} dB)" for d in result.drifting_layers)
            )
    return lines


def _registration_line(registration: Registration) -> str:
    if registration.version is None:
        return f"**Nothing registered**: {registration.reason}"
    champion = "moved to it" if registration.champion_moved else "not moved"
    return (
        f"**Registered** `{registration.model_name}` version {registration.version} "
        f"({registration.variant}), alias challenger; champion {champion}: {registration.reason}"
    )


def summary_json(**sections: Any) -> str:
    """Every record of the run, as JSON (records are pydantic models or lists of them)."""

    def dump(value: Any) -> Any:
        if isinstance(value, list):
            return [dump(item) for item in value]
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    return json.dumps({key: dump(value) for key, value in sections.items()}, indent=2)
