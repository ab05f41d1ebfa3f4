"""What a stage's result depends on, as one key, and whether a stored result is still usable.

A rerun of the same recipe (or a retried flow run) reuses the training, the export and the variants
whose keys match. A key covers everything that changes the stage's output: the recipe sections the
stage reads, the data file's sha256, the upstream files' sha256, the onnxforge source code and
the versions of the tools it drives.
A stored result is used only while every file it names still exists with its recorded sha256.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from onnxforge.adapters import architecture_of
from onnxforge.onnx_files import sha256_of
from onnxforge.records import ModelArtifact, TrainResult, VariantBuild

PACKAGE = Path(__file__).resolve().parent


# The tools whose version changes what a stage makes (a new quantizer, exporter or optimizer).
TOOLS = (
    "numpy",
    "onnx",
    "onnx-ir",
    "onnxruntime",
    "onnxscript",
    "onnxsim",
    "torch",
    "tensorflow",
    "tensorflow-cpu",
    "tf2onnx",
    "transformers",
)


def _tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for name in TOOLS:
        try:
            versions.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} absent")
    return ";".join(versions)


@functools.cache
def code_version() -> str:
    """sha256 over onnxforge's own Python sources (paths and bytes) and the installed versions of
    the tools it drives, computed once per process: a changed stage implementation or an
    upgraded quantizer never reuses results made by the old one."""
    digest = hashlib.sha256(_tool_versions().encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value


def stage_key(stage: str, **parts: Any) -> str:
    """One hex key for `stage` over `parts` (recipe sections, hashes) and the code version."""
    payload = {"stage": stage, "code": code_version(), **{k: _plain(v) for k, v in parts.items()}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return f"onnxforge-{stage}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def content_sha256(path: str | Path | None) -> str | None:
    """sha256 of a file, or over a folder's files (a SavedModel); None when there is no path."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode())
        digest.update(sha256_of(child).encode())
    return digest.hexdigest()


def train_key(recipe: Any, data_sha256: str) -> str:
    """Training depends on the model, train and dataset sections, the data and given weights."""
    return stage_key(
        "train",
        model=recipe.model,
        train=recipe.train,
        dataset=recipe.dataset,
        data=data_sha256,
        checkpoint=content_sha256(recipe.model.checkpoint),
        model_file=content_sha256(recipe.model.file),
        weight_inputs=weight_inputs_sha256(recipe.model),
    )


def weight_inputs_sha256(model: Any) -> list[str | None]:
    """sha256 of the files the architecture's kwargs name for its weights (a `transformers`
    save_pretrained folder): inputs like a checkpoint."""
    return [content_sha256(path) for path in architecture_of(model).weight_inputs(model.kwargs)]


def export_key(recipe: Any, checkpoint_sha256: str, data_sha256: str) -> str:
    """Export depends on the weights, the model (to rebuild it), the export section and the data
    (its example batch fixes the input shapes)."""
    return stage_key(
        "export",
        checkpoint=checkpoint_sha256,
        model=recipe.model,
        # export rebuilds the model from e.g. a folder's config.json before loading the weights
        weight_inputs=weight_inputs_sha256(recipe.model),
        export=recipe.export,
        data=data_sha256,
    )


def variant_key(name: str, settings: Any, parent_sha256: str, data_sha256: str) -> str:
    """A variant depends on its parent file, its settings and the calibration data."""
    return stage_key(f"variant-{name}", parent=parent_sha256, settings=settings, data=data_sha256)


def recorded_files(result: Any) -> list[tuple[str, str]]:
    """(path, sha256) of every file a stage result points at."""
    if isinstance(result, TrainResult):
        return [(result.checkpoint, result.checkpoint_sha256)]
    if isinstance(result, ModelArtifact):
        return [(result.path, result.sha256)]
    if isinstance(result, VariantBuild) and result.artifact is not None:
        return recorded_files(result.artifact)
    return []


def files_intact(result: Any) -> bool:
    """True when every file the result names exists with the sha256 it recorded. A variant that
    failed to build is never reused: its cause (memory, a killed tool) may be gone next time."""
    if isinstance(result, VariantBuild) and result.artifact is None:
        return False
    for path, expected in recorded_files(result):
        if not Path(path).is_file() or sha256_of(path) != expected:
            return False
    return True
