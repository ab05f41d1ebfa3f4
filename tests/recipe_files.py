"""Recipe files for refusal tests: the default recipe with a change, and where an error points.

Shared by tests/unit and tests/integration (and tests/flows), so no test module imports another.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import DEFAULT_RECIPE

BASE = yaml.safe_load(DEFAULT_RECIPE.read_text())


def write_recipe(folder: Path, change: dict[str, Any]) -> Path:
    """The default recipe with `change` merged in (dotted keys; None deletes), written to `folder`."""
    data = copy.deepcopy(BASE)
    for dotted, value in change.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def at(path: Path, needle: str) -> str:
    """'file:line' of the first line of `path` that contains `needle`: where errors point."""
    lines = path.read_text().splitlines()
    return f"{path}:{next(n for n, line in enumerate(lines, 1) if needle in line)}"
