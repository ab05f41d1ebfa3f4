"""The simplify stage: onnxsim with its own numeric check; on any trouble the input goes on."""

from __future__ import annotations

from pathlib import Path

from onnxforge.recipe import SimplifySpec
from onnxforge.records import ModelArtifact, VariantBuild, describe_onnx, write_atomically


def simplify_model(parent: ModelArtifact, spec: SimplifySpec, out_dir: Path) -> VariantBuild:
    """Write `simplified.onnx`, or say why the parent goes on unchanged (never raises)."""
    if not spec.enabled:
        return VariantBuild(variant="simplified", artifact=None, reason="disabled in the recipe")
    if parent.size_bytes > spec.max_bytes:
        return VariantBuild(
            variant="simplified",
            artifact=None,
            reason=f"model is {parent.size_bytes} bytes, over simplify.max_bytes={spec.max_bytes}",
        )
    import onnx
    import onnxsim

    try:
        simplified, check_ok = onnxsim.simplify(onnx.load(parent.path), check_n=spec.check_n)
    except Exception as error:  # noqa: BLE001 - a failed simplification must not end the run
        return VariantBuild(variant="simplified", artifact=None, reason=f"onnxsim failed: {error}")
    if not check_ok:
        return VariantBuild(
            variant="simplified", artifact=None, reason="onnxsim's own output check failed"
        )
    path = write_atomically(out_dir / "simplified.onnx", lambda temp: onnx.save(simplified, temp))
    producer = f"onnxsim {onnxsim.__version__} (check_n={spec.check_n})"
    return VariantBuild(
        variant="simplified", artifact=describe_onnx(path, "simplified", parent.variant, producer)
    )
