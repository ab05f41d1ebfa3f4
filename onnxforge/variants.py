"""The variant registry: each ONNX variant's parent, where it runs and its default tolerance.

The recipe's parity tolerances are keyed by these names, and the flow reads the stage that
makes each variant from here, so a new variant is one new entry plus its maker.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Tolerance(BaseModel):
    """How far a variant's outputs may drift from the source model's and still pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: float = Field(ge=0, description="largest allowed absolute error on any output value")
    mean_atol: float = Field(ge=0, description="largest allowed mean absolute error")
    min_top1_agreement: float = Field(ge=0, le=1, description="share of argmax that must agree")


@dataclass(frozen=True)
class VariantSpec:
    """A registered ONNX variant."""

    name: str
    parent: str | None  # the variant it is made from (None: made from the framework model)
    stage: str  # the pipeline stage that makes it
    device: str  # 'any', or 'gpu' for variants without CPU kernels
    default_tolerance: Tolerance
    description: str


_EXACT = Tolerance(atol=1e-4, mean_atol=1e-5, min_top1_agreement=1.0)

VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("fp32", None, "export", "any", _EXACT, "the framework's ONNX export"),
        VariantSpec("simplified", "fp32", "simplify", "any", _EXACT, "onnxsim constant folding"),
        VariantSpec(
            "int8-dynamic",
            "simplified",
            "quantize",
            "any",
            Tolerance(atol=1.0, mean_atol=0.2, min_top1_agreement=0.97),
            "int8 weights, activations quantized at run time",
        ),
    )
}
