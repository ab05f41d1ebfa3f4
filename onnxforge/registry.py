"""Logging variants as MLflow LoggedModels, and the tags that make a registered version self-describing."""

from __future__ import annotations

from typing import Any

from onnxforge.metrics import PARITY_FIELDS, bench_metrics, objective_key, parity_metrics
from onnxforge.recipe import Recipe
from onnxforge.records import BenchResult, ModelArtifact, ParityResult
from onnxforge.run_lifecycle import git_commit
from onnxforge.tracking import RunContext, client, log_metrics


def log_variant_models(
    context: RunContext,
    artifacts: list[ModelArtifact],
    parity: list[ParityResult],
    bench: list[BenchResult],
    example: Any,
) -> dict[str, str]:
    """Log each variant as a LoggedModel (signature, input example, only its own metrics) and its
    file under `onnx/`; returns variant -> model id. A retried call reuses the models it made.

    No run is started here: `with mlflow.start_run(run_id=...)` ends the run (FINISHED) when the
    block exits, and `Model.log` with a run copies every run metric of its step onto the model.
    Instead each LoggedModel is created up front with this run as its source, filled by
    `log_model(model_id=...)`, linked as the run's output, and given its own metrics by model_id.
    """
    import mlflow.onnx
    import onnx
    from mlflow.entities import LoggedModelOutput

    mlflow_client = client(context.tracking_uri)
    signature, example = _signature(artifacts, example)
    existing = _logged_models(mlflow_client, context)
    requirements = _pip_requirements()
    model_ids = {}
    for artifact in artifacts:
        if artifact.variant in existing:  # a retried task: that model is complete already
            model_ids[artifact.variant] = existing[artifact.variant]
            continue
        model = mlflow_client.create_logged_model(
            context.experiment_id,
            name=artifact.variant,
            source_run_id=context.run_id,
            tags={
                "variant": artifact.variant,
                "sha256": artifact.sha256,
                # what made it (the fusions that applied, the quantizer's settings) and from what
                "producer": artifact.producer[:5000],
                "parent": str(artifact.parent),
                **build_tags(artifact),
            },
        )
        mlflow.onnx.log_model(
            onnx.load(artifact.path),
            name=artifact.variant,
            model_id=model.model_id,
            signature=signature,
            input_example=example,
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,
            pip_requirements=requirements,
        )
        mlflow_client.log_outputs(context.run_id, [LoggedModelOutput(model.model_id, step=0)])
        variant_metrics = {
            **parity_metrics([p for p in parity if p.variant == artifact.variant]),
            **bench_metrics([b for b in bench if b.variant == artifact.variant]),
        }
        log_metrics(context, variant_metrics, model_id=model.model_id)
        mlflow_client.log_artifact(context.run_id, artifact.path, "onnx")
        # READY last: a retry treats a READY model as complete and skips it
        mlflow_client.finalize_logged_model(model.model_id, "READY")
        model_ids[artifact.variant] = model.model_id
    return model_ids


def _signature(artifacts: list[ModelArtifact], example: Any) -> tuple[Any, Any]:
    """The signature every variant shares, and the input example in the form it names."""
    from mlflow.models import infer_signature

    from onnxforge.batching import session_batch
    from onnxforge.inputs import named, tile
    from onnxforge.runtime import input_names, make_session

    # Every variant keeps the export's inputs and outputs, so the fp32 export's outputs give the
    # signature for all (a GPU-only variant need not run here).
    reference = next(a for a in artifacts if a.variant == "fp32")
    session = make_session(reference.path, "CPUExecutionProvider")
    fixed = session_batch(session)  # a file with a fixed batch gets an example of that size
    example = tile(example, fixed) if fixed is not None else example
    feed = named(example, input_names(session))
    # Always by name: with an unnamed signature `mlflow models serve` answers HTTP 400
    # ("un-named model signature") to {"inputs": {"<input name>": ...}}, the name the pull
    # manifest gives; named, both that and a plain nested list ({"inputs": [[...]]}) work.
    example = feed
    outputs = session.run(None, feed)
    output_names = [o.name for o in session.get_outputs()]
    signature = infer_signature(
        example, outputs[0] if len(outputs) == 1 else dict(zip(output_names, outputs, strict=True))
    )
    return signature, example


def _pip_requirements() -> list[str]:
    """What serving an ONNX variant needs, pinned to this environment.

    Given explicitly because without it MLflow infers them per model by starting a Python
    process that loads the model and records what it imports (mlflow.onnx.save_model calls
    mlflow.models.infer_pip_requirements): seconds per variant, most of this task's time.
    """
    import mlflow.onnx
    import numpy

    return [*mlflow.onnx.get_default_pip_requirements(), f"numpy=={numpy.__version__}"]


def _logged_models(mlflow_client: Any, context: RunContext) -> dict[str, str]:
    """variant -> model id of the READY LoggedModels this run already logged."""
    found = mlflow_client.search_logged_models(
        experiment_ids=[context.experiment_id],
        filter_string=f"source_run_id = '{context.run_id}'",
    )
    return {
        m.name: m.model_id for m in found if str(getattr(m.status, "name", m.status)) == "READY"
    }


def version_tags(
    recipe: Recipe,
    context: RunContext,
    artifact: ModelArtifact,
    parity: ParityResult,
    bench: list[BenchResult],
    dataset_hash: str,
) -> dict[str, str]:
    """Tags that make a registered version self-describing."""
    tags = {
        "variant": artifact.variant,
        "sha256": artifact.sha256,
        "size_bytes": str(artifact.size_bytes),
        "producer": artifact.producer,
        "parent": str(artifact.parent),
        **build_tags(artifact),
        "objective": objective_key(recipe.registry.objective),
        "source_run_id": context.run_id,
        "flow_run_id": context.flow_run_id,
        "code_commit": git_commit() or "unknown",  # the same commit the run's tag names
        "dataset_hash": dataset_hash,
        "recipe": recipe.name,
    }
    for name in PARITY_FIELDS:
        if getattr(parity, name) is not None:
            tags[f"parity.{name}"] = repr(getattr(parity, name))
    for row in bench:
        if row.variant == artifact.variant and row.source == "run" and row.status == "ok":
            tags[f"p50_ms.{row.provider}.bs{row.batch_size}"] = f"{row.p50_ms:.4f}"
            if row.speedup is not None:
                tags[f"speedup.{row.provider}.bs{row.batch_size}"] = (
                    f"{row.speedup:.3f} [{row.speedup_low:.3f}, {row.speedup_high:.3f}]"
                )
    objective = recipe.registry.objective
    for row in bench:
        mine = row.variant == artifact.variant and row.source == "run" and row.status == "ok"
        if mine and (row.provider, row.batch_size) == (objective.provider, objective.batch_size):
            value = (
                artifact.size_bytes
                if objective.metric == "size_bytes"
                else getattr(row, objective.metric)
            )
            tags["objective_value"] = repr(value)
    tags["onnxruntime_version"] = _onnxruntime_version()
    return tags


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def build_tags(artifact: ModelArtifact) -> dict[str, str]:
    """What the build-time checks ran and what the maker changed (e.g. an opset upgrade)."""
    tags = {"checks": artifact.checks[:5000]} if artifact.checks else {}
    if artifact.notes:
        tags["notes"] = "; ".join(artifact.notes)[:5000]
    return tags
