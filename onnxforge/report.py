"""The run's summary: a markdown table (variant by provider) and a JSON report."""

from __future__ import annotations

import json
from typing import Any

from onnxforge.profiles import DEFAULT, labelled
from onnxforge.records import (
    BenchResult,
    OutputParity,
    ParityResult,
    Registration,
    TrainResult,
    VariantBuild,
)


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
    if all(r.status == rows[0].status != "ok" for r in rows):  # one reason for every batch size
        return f"{rows[0].status}: {rows[0].reason}"
    # a fixed-batch model is measured at some batch sizes and unsupported at the others
    return ", ".join(
        f"bs{r.batch_size} {r.p50_ms:.3f} ms"
        if r.status == "ok"
        else f"bs{r.batch_size} {r.status}"
        for r in rows
    )


def summary_markdown(
    builds: list[VariantBuild],
    parity: list[ParityResult],
    bench: list[BenchResult],
    registration: Registration,
    run_url: str,
) -> str:
    """Variant by provider: size, parity and p50 per batch size, then what was registered."""
    providers = sorted({row.provider for row in bench})
    parity_of = {(p.variant, p.profile): p for p in parity}
    lines = [
        "# onnxforge run summary",
        "",
        "| variant | size (bytes) | parity | " + " | ".join(f"{p} p50" for p in providers) + " |",
        "|---|---|---|" + "---|" * len(providers),
    ]
    for build in builds:
        if build.artifact is None:
            lines.append(
                f"| {build.variant} | - | build_failed: {_cell(build.reason)} |"
                + " - |" * len(providers)
            )
            continue
        # one line per runtime profile the variant's parity was checked under
        profiles = [p for v, p in parity_of if v == build.variant] or [DEFAULT]
        for profile in profiles:
            mine = [r for r in bench if (r.variant, r.profile) == (build.variant, profile)]
            cells = [_bench_cell([r for r in mine if r.provider == p]) for p in providers]
            lines.append(
                f"| {labelled(build.variant, profile)} | {build.artifact.size_bytes} | "
                f"{_parity_cell(parity_of.get((build.variant, profile)))} | "
                + " | ".join(cells)
                + " |"
            )
    for variant in sorted({r.variant for r in bench if r.source in ("framework", "champion")}):
        rows = [r for r in bench if r.variant == variant]
        role = "baseline" if rows[0].source == "framework" else "current, this run's rounds"
        lines.append(
            f"| {variant} ({role}) | {rows[0].size_bytes or '-'} | "
            f"{'source' if role == 'baseline' else 'fetched, sha256 verified'} | "
            + " | ".join(_bench_cell([r for r in rows if r.provider == p]) for p in providers)
            + " |"
        )
    lines += _build_notes(builds)
    lines += _measured_where(bench)
    lines += _noise_note(bench)
    lines += _comparisons(bench, registration)
    lines += _failure_details(parity)
    lines += ["", *_registration_lines(registration), "", f"MLflow run: {run_url}"]
    return "\n".join(lines)


def _measured_where(bench: list[BenchResult]) -> list[str]:
    """Which host (and for a dispatched benchmark, which pool and worker) measured each
    provider's rounds."""
    places = {}
    for row in bench:
        if row.status != "ok":  # skipped, refused, or a dispatched benchmark no worker ran
            continue
        group = row.group or row.provider
        if row.pool:
            worker = f"worker {row.worker} of " if row.worker else "a worker of "
            places.setdefault(group, set()).add(f"{worker}work pool {row.pool} on {row.host}")
        else:
            places.setdefault(group, set()).add(f"this flow's host {row.host}")
    if not places:
        return []
    return [
        "",
        "Measured on: "
        + "; ".join(
            f"{group}: {', '.join(sorted(where))}" for group, where in sorted(places.items())
        ),
    ]


def _build_notes(builds: list[VariantBuild]) -> list[str]:
    """What a maker changed on its own (an opset upgrade, a setting turned off) and why."""
    notes = [
        f"- {build.variant}: {note}"
        for build in builds
        if build.artifact is not None
        for note in build.artifact.notes
    ]
    return ["", "Build notes:", *notes] if notes else []


def _noise_note(bench: list[BenchResult]) -> list[str]:
    noisy = [
        f"{labelled(r.variant, r.profile)} {r.provider} bs{r.batch_size} (round cv {r.round_cv:.2f})"
        for r in bench
        if r.noisy
    ]
    if not noisy:
        return []
    rule = "flagged; such a row wins only when its whole interval is faster"
    return ["", f"Noisy rows ({rule}): " + ", ".join(noisy)]


def _comparisons(bench: list[BenchResult], registration: Registration) -> list[str]:
    """Same-run ratios with their intervals: candidate vs champion, candidate vs framework."""
    from onnxforge.rounds import compare, describe

    candidate = registration.variant
    if candidate is None:
        return []
    profile = registration.decisions[0].profile if registration.decisions else DEFAULT
    mine = [r for r in bench if (r.variant, r.profile, r.source) == (candidate, profile, "run")]
    others = [r for r in bench if r.source in ("champion", "framework")]
    lines = []
    for row in mine:
        for other in others:
            if other.batch_size != row.batch_size:
                continue
            comparison = compare(row, other)
            if comparison is not None:
                lines.append(f"- {comparison.contender} vs {other.variant}: {describe(comparison)}")
    if not lines:
        return []
    header = (
        "Same-run ratios (other p50 / candidate p50; > 1: the candidate is faster; 95% interval):"
    )
    return ["", header, *lines]


def _failure_details(parity: list[ParityResult]) -> list[str]:
    """Per-output numbers of failing variants and, for int8 ones, the layers that drift most."""
    lines: list[str] = []
    for result in parity:
        if result.passed:
            continue
        lines += ["", f"**{labelled(result.variant, result.profile)}** failed parity:"]
        lines += [f"- {_output_errors(o)}" for o in result.per_output]
        if result.drifting_layers:
            lines.append(
                "- layers drifting most (lowest SQNR first; candidates for `nodes_to_exclude`): "
                + ", ".join(f"`{d.node}` ({d.sqnr_db:.1f} dB)" for d in result.drifting_layers)
            )
    return lines


def _output_errors(out: OutputParity) -> str:
    """One output's errors, absolute and (when measured) in spreads of the reference."""
    if out.spread is None:
        return (
            f"{out.name}: max abs {out.max_abs_err:.3g}, mean abs {out.mean_abs_err:.3g}, "
            f"relative {out.rel_err:.3g}"
        )
    return (
        f"{out.name}: max abs {out.max_abs_err:.3g} ({out.max_spread_err:.3g} x spread), "
        f"mean abs {out.mean_abs_err:.3g} ({out.mean_spread_err:.3g} x spread), "
        f"relative {out.rel_err:.3g}; spread {out.spread:.3g}"
    )


def _registration_lines(registration: Registration) -> list[str]:
    if registration.version is None:
        return [f"**Nothing registered**: {registration.reason}"]
    lines = [
        f"**Registered** `{registration.model_name}` version {registration.version} "
        f"({registration.variant}); champion {'moved to it' if registration.champion_moved else 'not moved'}: "
        f"{registration.reason}",
        "",
    ]
    for decision in registration.decisions:
        target = f"v{decision.version} ({decision.variant})" if decision.version else "-"
        verb = "moves to" if decision.move else "stays; candidate"
        lines.append(f"- `{decision.alias}` {verb} {target}: {decision.reason}")
    if registration.floors:
        lines.append("- below a quality floor: " + "; ".join(registration.floors))
    return lines


def summary_json(**sections: Any) -> str:
    """Every record of the run, as JSON (records are pydantic models or lists of them)."""

    def dump(value: Any) -> Any:
        if isinstance(value, list):
            return [dump(item) for item in value]
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    return json.dumps({key: dump(value) for key, value in sections.items()}, indent=2)


def publish_summary_files(
    context: Any,
    trained: TrainResult,
    builds: list[VariantBuild],
    parity: list[ParityResult],
    bench: list[BenchResult],
    registration: Registration,
) -> str:
    """summary.md and summary.json into the MLflow run; returns the markdown."""
    from onnxforge.tracking import client, run_url

    markdown = summary_markdown(builds, parity, bench, registration, run_url(context))
    report = summary_json(
        trained=trained, builds=builds, parity=parity, bench=bench, registration=registration
    )
    mlflow_client = client(context.tracking_uri)
    mlflow_client.log_text(context.run_id, markdown, "summary.md")
    mlflow_client.log_text(context.run_id, report, "summary.json")
    return markdown


def _cell(text: str | None) -> str:
    """Text safe inside a markdown table cell (a tool's message may hold '|' or newlines)."""
    return " ".join(str(text or "").split()).replace("|", "\\|")
