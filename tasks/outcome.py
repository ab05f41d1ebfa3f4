"""The run's outcome as Prefect shows it: flow-run artifacts, events and the final state message.

`publish_outcome` is called in the flow body, not in a task: an artifact created inside a task
belongs to that task run (the Artifacts tab lists it under the task), while one created in the
flow body belongs to the flow run itself. The events let automations react to a registration or
a champion move; the returned state's message says what happened in one line.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.states import Completed, State

from onnxforge.bench_report import bench_table
from onnxforge.records import AliasDecision, BenchResult, ParityResult, Registration
from onnxforge.tracking import RunContext, run_url

REGISTERED = "onnxforge.model.registered"
CHAMPION_MOVED = "onnxforge.champion.moved"
PLOTS = ("latency_by_batch.png", "accuracy_vs_latency.png")


def publish_outcome(
    registration: Registration,
    summary: str,
    bench: list[BenchResult],
    parity: list[ParityResult],
    context: RunContext,
) -> State:
    """Artifacts on the flow run, one event per version and per moved alias, the final state."""
    url = run_url(context)
    create_markdown_artifact(summary, key="onnxforge-summary", description="variant by provider")
    create_link_artifact(url, link_text="MLflow run", key="onnxforge-mlflow-run")
    create_table_artifact(
        bench_table(bench, parity),
        key="onnxforge-benchmark",
        description="contender x provider x batch, interleaved",
    )
    plots = _plots_markdown(Path(context.work_dir) / "benchmark")
    if plots:
        create_markdown_artifact(
            plots, key="onnxforge-benchmark-plots", description="benchmark plots"
        )
    emit_outcome_events(registration, context)
    return Completed(message=outcome_message(registration), data=registration)


def _plots_markdown(folder: Path) -> str:
    """The benchmark plots as inline images (the Prefect UI shows no files, only markdown)."""
    return "\n\n".join(
        f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
        for path in (folder / name for name in PLOTS)
        if path.is_file()
    )


def outcome_message(registration: Registration) -> str:
    """One line: the version and whether champion moved, e.g. `m v3 (int8-dynamic): champion
    moved from v2`, `... champion stays at v2: within noise`, `nothing registered: <reason>`."""
    if registration.version is None:
        return f"nothing registered: {registration.reason}"
    head = f"{registration.model_name} v{registration.version} ({registration.variant})"
    champion = _decision(registration, "champion")
    if registration.champion_moved:
        was = f"v{champion.against}" if champion and champion.against else "no champion"
        return f"{head}: champion moved from {was}"
    reason = champion.reason if champion else registration.reason
    if champion and champion.against:
        return f"{head}: champion stays at v{champion.against}: {reason}"
    return f"{head}: champion not moved: {reason}"


def _decision(registration: Registration, alias: str) -> AliasDecision | None:
    return next((d for d in registration.decisions if d.alias == alias), None)


def emit_outcome_events(registration: Registration, context: RunContext) -> None:
    """`onnxforge.model.registered` per version, `onnxforge.champion.moved` per moved alias."""
    variants = {version: variant for variant, version in registration.versions.items()}
    if registration.version is not None:
        variants.setdefault(registration.version, registration.variant or "")
    for version, variant in sorted(variants.items()):
        _emit(REGISTERED, registration, context, version=version, variant=variant, alias="")
    for decision in registration.decisions:
        if decision.move and decision.alias != "challenger" and decision.version:
            _emit(
                CHAMPION_MOVED,
                registration,
                context,
                version=decision.version,
                variant=decision.variant or "",
                alias=decision.alias,
                reason=decision.reason,
                previous=decision.against or "",
            )


def _emit(event: str, registration: Registration, context: RunContext, **payload: Any) -> None:
    name = registration.model_name
    payload.setdefault("reason", registration.reason)
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"onnxforge.model.{name}",
            "prefect.resource.name": name,
        },
        related=[
            {
                "prefect.resource.id": f"mlflow.run.{context.run_id}",
                "prefect.resource.role": "mlflow-run",
            }
        ],
        payload={"model": name, "mlflow_run_id": context.run_id, **payload},
    )
