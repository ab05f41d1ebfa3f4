"""The trust boundary: what a recipe file may choose that an override may not.

Recipe files are trusted configuration: they name the code a run imports (`model.architecture`)
and the files it reads. Overrides (`onnxforge run --set`, the flow's `overrides` parameter, hence
deployment parameters and the Prefect API) are data: they may tune values, never choose code or
paths, unless the operator opts in. Import paths resolve only inside an allow-list the operator
sets in the environment, and names that become folders are checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

IMPORT_MODULES_ENV = "ONNXFORGE_IMPORT_MODULES"
TRUSTED_OVERRIDES_ENV = "ONNXFORGE_TRUSTED_OVERRIDES"

# Model fields that choose code (architecture, kwargs, framework) or files; every Path-typed
# field of the schema is protected too (onnxforge.recipe.PROTECTED_FIELDS adds them).
PROTECTED_MODEL_FIELDS = (
    "model.framework",
    "model.architecture",
    "model.kwargs",
    "model.file",
    "model.checkpoint",
)
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def allowed_modules() -> tuple[str, ...]:
    """The modules (or package prefixes) the operator allows import paths into."""
    entries = os.environ.get(IMPORT_MODULES_ENV, "").split(",")
    return tuple(entry.strip() for entry in entries if _MODULE.match(entry.strip()))


def import_allowed(module: str) -> bool:
    """True when `module` is an allowed module or lies inside an allowed package."""
    return any(module == entry or module.startswith(entry + ".") for entry in allowed_modules())


def check_import_path(import_path: str) -> None:
    """Raise ValueError unless `package.module:Name` lies inside the allow-list (nothing imported)."""
    module = import_path.partition(":")[0]
    if import_allowed(module):
        return
    now = os.environ.get(IMPORT_MODULES_ENV, "").strip() or "unset"
    raise ValueError(
        f"import path {import_path!r} is outside the import allow-list; name its module or a "
        f"package above it in {IMPORT_MODULES_ENV} (comma-separated, e.g. mypackage.models) to "
        f"allow it ({IMPORT_MODULES_ENV} is {now}); built-in architectures need no entry"
    )


def overrides_trusted() -> bool:
    """The operator's opt-in: overrides may change code and paths (ONNXFORGE_TRUSTED_OVERRIDES=1)."""
    return os.environ.get(TRUSTED_OVERRIDES_ENV, "").strip().lower() in ("1", "true", "yes")


def check_safe_name(value: str) -> str:
    """A name that becomes a folder: no separators, no '..', no leading dot, no control chars."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"must not contain control characters; got {value!r}")
    if "/" in value or "\\" in value:
        raise ValueError(f"must not contain '/' or '\\' (it names a folder); got {value!r}")
    if ".." in value or value.startswith("."):
        raise ValueError(
            f"must not contain '..' or start with '.' (it names a folder); got {value!r}"
        )
    if value != value.strip():
        raise ValueError(f"must not start or end with a space; got {value!r}")
    return value


def check_deployment_recipe(recipe_path: str, configs: Path) -> Path:
    """A deployment run's recipe_path is a parameter, hence untrusted: it must name a recipe in
    the checkout's `configs/` (Prefect's form only offers those, but an API caller can turn the
    server's schema check off with `enforce_parameter_schema: false`). Returns the file, resolved
    against the checkout (not the worker's working folder)."""
    resolved = (configs.parent / recipe_path).resolve()
    if overrides_trusted():
        return resolved
    if resolved.parent != configs.resolve() or resolved.suffix not in (".yaml", ".yml"):
        raise ValueError(
            f"a deployment run takes a recipe from {configs}/ only; got {recipe_path!r} "
            f"(set {TRUSTED_OVERRIDES_ENV}=1 on the worker to allow any file)"
        )
    return resolved
