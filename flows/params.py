"""The flow's parameter types, as Prefect's run form and API show and check them.

Prefect builds each deployment's parameter schema from these annotations (descriptions come
from the flow's docstring `Args:` section). The server refuses a deployment run whose
parameters do not fit the schema, so a recipe path outside `configs/` cannot be passed through
the API or the UI; a direct Python call (the CLI, tests) may still name any recipe file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import WithJsonSchema

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
DEFAULT_RECIPE = "configs/digits_cnn.yaml"


def shipped_recipes() -> list[str]:
    """Every recipe in configs/, as paths relative to the repository root (the run's folder)."""
    return sorted(f"configs/{path.name}" for path in CONFIGS.glob("*.yaml"))


# Validated as a plain string in Python; shown (and enforced by the server) as a list.
RecipePath = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": shipped_recipes(), "title": "recipe"}),
]

# JSON values: `{"train.epochs": 3}` or `{"benchmark.batch_sizes": [1, 8]}`. A string is read as
# YAML, like `onnxforge run --set`, so `{"train.epochs": "3"}` means the same.
OverrideScalar = str | int | float | bool
OverrideValue = OverrideScalar | list[OverrideScalar]


def run_name(recipe_path: str) -> str:
    """A flow run's name: the recipe and the UTC start time, e.g. digits_cnn-2026-11-28T02-00Z."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%MZ")
    return f"{Path(recipe_path).stem}-{stamp}"
