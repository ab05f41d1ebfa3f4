"""Making a variant from its parent: the registry's maker, an atomic write, build-time checks, a
record or a reason.

A file is renamed into place only after it passed the checks (full onnx.checker, a CPU session,
one inference on real samples), so an invalid variant never lands as `<name>.onnx`, is never
logged as a model, and its children are made from the nearest ancestor that was built.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from onnxforge.inputs import Features
from onnxforge.onnx_files import describe_onnx, write_atomically
from onnxforge.records import ModelArtifact, VariantBuild
from onnxforge.variants import VARIANTS, Made
from onnxforge.variants.checks import BuildCheckFailed, check_built, tool_message


def build_variant(
    name: str, parent: ModelArtifact, settings: BaseModel, out_dir: Path, train_features: Features
) -> VariantBuild:
    """Write `<name>.onnx` from `parent` and check it; a maker's error or a failed check is a
    `build_failed` record with the tool's message (never raised)."""
    spec = VARIANTS[name]
    final = out_dir / f"{name}.onnx"
    made, checks = Made(""), ""

    def write(temp: Path) -> None:
        nonlocal made, checks
        try:
            result = spec.make(Path(parent.path), settings, temp, train_features)
        except Exception as error:  # noqa: BLE001 - a variant that cannot be made is a result
            message = tool_message(error, temp, final.name)
            raise BuildCheckFailed("make", f"{type(error).__name__}: {message}") from None
        made = result if isinstance(result, Made) else Made(result)
        checks = check_built(temp, final.name, spec.device, train_features)

    try:
        path = write_atomically(final, write)
    except BuildCheckFailed as failure:
        return VariantBuild(
            variant=name,
            artifact=None,
            status="build_failed",
            reason=f"made from {parent.variant}: {failure}",
        )
    artifact = describe_onnx(path, name, parent.variant, made.producer, checks, made.notes)
    return VariantBuild(variant=name, artifact=artifact, status="built")
