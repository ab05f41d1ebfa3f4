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

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Tolerance(BaseModel):
    """How far a variant's outputs may drift from the source model's and still pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atol: float = Field(ge=0, description="largest allowed absolute error on any output value")
    mean_atol: float = Field(ge=0, description="largest allowed mean absolute error")
    rtol: float | None = Field(
        None, ge=0, description="largest allowed |error| / (|reference| + 1e-6), max over values"
    )
    min_top1_agreement: float = Field(ge=0, le=1, description="share of argmax that must agree")


class VariantSettings(BaseModel):
    """Base of every variant's settings: unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# make(parent_path, settings, out_path, calibration_features) -> producer description
Maker = Callable[[Path, BaseModel, Path, np.ndarray], str]


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

EXACT = Tolerance(atol=1e-4, mean_atol=1e-5, min_top1_agreement=1.0)

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


def buildable_from(variant: str, built: set[str]) -> str:
    """The nearest ancestor of `variant` that was built (a parent that failed is skipped over)."""
    parent = VARIANTS[variant].parent
    while parent is not None and parent not in built:
        parent = VARIANTS[parent].parent
    return parent or "fp32"


_load_all()
