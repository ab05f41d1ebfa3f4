"""The variant registry: each ONNX variant is one module in this package.

A module registers a VariantSpec with `register(...)`: its typed settings, the function that makes
it from its parent, its default parity tolerance and where it can run. The recipe's `variants`
section is built from this registry, so a new variant is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    create_model,
    model_serializer,
)


class Tolerance(BaseModel):
    """How far a variant's outputs may drift from the source model's and still pass.

    With `scale: spread` (the default), atol and mean_atol are multiples of each reference
    output's spread (its standard deviation over the test split), so one default fits logits
    (spread ~7 on digits) and probabilities (spread ~0.3) alike; `absolute` reads them as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: float = Field(ge=0, description="largest allowed error on any output value")
    mean_atol: float = Field(ge=0, description="largest allowed mean error")
    rtol: float | None = Field(
        None, ge=0, description="largest allowed max |error| / max |reference|"
    )
    min_top1_agreement: float = Field(ge=0, le=1, description="share of argmax that must agree")
    scale: Literal["spread", "absolute"] = Field(
        "spread", description="spread: atol and mean_atol are multiples of the output's spread"
    )

    def merged(self, override: ToleranceOverride) -> Tolerance:
        """This tolerance with the fields the override sets replaced."""
        given = {name: getattr(override, name) for name in override.model_fields_set}
        return Tolerance.model_validate({**self.model_dump(), **given})


class _Partial(BaseModel):
    """Serialises only the fields that were given (MLflow params show what the recipe set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """The same fields, each optional: a recipe may set only some of them."""
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        # keep the bounds (ge/le): a bad value is refused when the recipe loads
        kind = (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        )
        fields[name] = (kind | None, Field(None, description=field.description))
    return create_model(
        f"{model.__name__}Override",
        __base__=_Partial,
        __doc__="A recipe's tolerance: only the fields it sets replace the registered default.",
        **fields,
    )


ToleranceOverride = _partial(Tolerance)


class VariantSettings(BaseModel):
    """Base of every variant's settings: unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Made:
    """What a maker reports: the producer, and any setting it had to change to make the file."""

    producer: str
    notes: tuple[str, ...] = ()


# make(parent_path, settings, out_path, calibration_features) -> producer description
Maker = Callable[[Path, BaseModel, Path, np.ndarray], "str | Made"]


@dataclass(frozen=True)
class VariantSpec:
    """A registered ONNX variant."""

    name: str
    parent: str | None  # the variant it is made from (None: made by the export stage)
    settings: type[VariantSettings]
    make: Maker | None
    default_tolerance: Tolerance
    device: str  # 'any', or 'gpu' for variants without CPU kernels
    description: str
    quantized: bool = False  # int8 variants get a drift report when they fail parity


VARIANTS: dict[str, VariantSpec] = {}

# Tolerances are in spreads (std of the reference output over the test split). Measured on the
# shipped recipes (digits_cnn seeds 0-2, digits_keras, text_transformer; onnxruntime 1.32 CPU),
# fp32/simplified against the framework erred at most 1.2e-6 spreads (max) and 1.4e-7 (mean);
# a weight-corrupted fp32 erred 17-960 spreads (max), 5-235 (mean). ~10x headroom: summation
# order differs between CPUs (AVX2, AVX-512) and grows with depth; still ~7e-5 absolute on
# digits logits (spread ~7), as tight as the old absolute atol 1e-4.
EXACT = Tolerance(atol=1e-5, mean_atol=1e-6, min_top1_agreement=1.0)

# Registration order is build order: a variant's parent must come before it.
_ORDER = ("fp32", "simplified", "ort_optimized", "int8_dynamic", "int8_static", "fp16")


def register(spec: VariantSpec) -> VariantSpec:
    """Add a variant to the registry (called at import time of its module)."""
    if spec.parent is not None and spec.parent not in VARIANTS:
        raise ValueError(f"variant {spec.name}: parent {spec.parent} is not registered before it")
    VARIANTS[spec.name] = spec
    return spec


def _load_all() -> None:
    modules = {info.name for info in pkgutil.iter_modules(__path__)}
    for name in [*_ORDER, *sorted(modules - set(_ORDER))]:
        if name in modules:
            importlib.import_module(f"{__name__}.{name}")


def parent_of(variant: str, settings: BaseModel | None = None) -> str | None:
    """The variant it is made from: the settings' `source` when they have one (int8 variants
    may quantize ort-optimized's graph), else the registered parent."""
    return getattr(settings, "source", None) or VARIANTS[variant].parent


def buildable_from(variant: str, built: set[str], settings: BaseModel | None = None) -> str:
    """The nearest ancestor of `variant` that was built (a parent that failed is skipped over)."""
    parent = parent_of(variant, settings)
    while parent is not None and parent not in built:
        parent = VARIANTS[parent].parent
    return parent or "fp32"


_load_all()
