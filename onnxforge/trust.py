"""The trust boundary: what a recipe file may choose that an override may not.

Recipe files are trusted configuration: they name the code a run imports (`model.architecture`)
and the files it reads. Overrides (`onnxforge run --set`, the flow's `overrides` parameter, hence
deployment parameters and the Prefect API) are data: they may tune values, never choose code or
paths, unless the operator opts in. Import paths resolve only inside an allow-list the operator
sets in the environment, and names that become folders are checked. The promotion bar (floors,
margins, budgets, the objective, parity tolerances) is the recipe's too: an override may tighten
it, never loosen it, unless the operator opts in (ONNXFORGE_TRUSTED_BAR=1).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from onnxforge.recipe_yaml import shown

IMPORT_MODULES_ENV = "ONNXFORGE_IMPORT_MODULES"
TRUSTED_OVERRIDES_ENV = "ONNXFORGE_TRUSTED_OVERRIDES"
TRUSTED_BAR_ENV = "ONNXFORGE_TRUSTED_BAR"

# The promotion bar: which way each field tightens. LOWER: a smaller value is stricter; HIGHER: a
# larger one is; unset (None) is the loosest value of either (no floor, no ceiling). SAME: the
# recipe's value only (the objective; a tolerance's scale changes what its numbers mean).
LOWER, HIGHER, SAME = "lower", "higher", "same"
PROMOTION_BAR = {
    "register.objective.metric": SAME,
    "register.objective.provider": SAME,
    "register.objective.batch_size": SAME,
    "register.min_accuracy": HIGHER,  # a floor on test accuracy
    "register.max_rmse": LOWER,  # a ceiling on test RMSE
    "register.floor_p_value": LOWER,  # must beat the majority class with p below this
    "register.champion_accuracy_budget": LOWER,  # accuracy the candidate may lose to champion
    "register.regression_margin": LOWER,  # how much slower than champion the candidate may be
    "register.speed_margin": HIGHER,  # how much faster it must be to move champion on speed
    "parity.accuracy_drop_budget": LOWER,  # accuracy a variant may lose to its source model
    "edge.memory_budget_mb": LOWER,  # peak memory a champion-edge file may need
}
# Every variant's effective tolerance (its registered default merged with the recipe's fields):
# parity.tolerances.<variant>.<field>.
TOLERANCE_BAR = {
    "atol": LOWER,
    "mean_atol": LOWER,
    "rtol": LOWER,
    "min_top1_agreement": HIGHER,
    "scale": SAME,
}

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


def bar_trusted() -> bool:
    """The operator's opt-in: overrides may loosen the promotion bar (ONNXFORGE_TRUSTED_BAR=1);
    trusted overrides (ONNXFORGE_TRUSTED_OVERRIDES=1) choose code, so they include it."""
    value = os.environ.get(TRUSTED_BAR_ENV, "").strip().lower()
    return value in ("1", "true", "yes") or overrides_trusted()


# Unicode categories refused in names: controls (C0, DEL, C1 such as NEL \x85 and CSI \x9b),
# format characters (bidi embeddings, overrides and isolates U+202A-U+202E, U+2066-U+2069,
# zero-width characters), lone surrogates, line and paragraph separators.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


def _unsafe_char(value: str) -> str | None:
    """'U+202E RIGHT-TO-LEFT OVERRIDE' for the first character a name may not hold, else None."""
    for char in value:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            name = unicodedata.name(char, "")
            return f"U+{ord(char):04X}{' ' + name if name else ''}"
    return None


def check_safe_name(value: str) -> str:
    """A name that becomes a folder: no separators, no '..', no leading dot, no control chars
    (nor bidi overrides or other invisible format characters)."""
    unsafe = _unsafe_char(value)
    if unsafe is not None:
        raise ValueError(
            f"must not contain control characters (including bidi and other format "
            f"characters); got {shown(value)}, which holds {unsafe}"
        )
    if "/" in value or "\\" in value:
        raise ValueError(f"must not contain '/' or '\\' (it names a folder); got {shown(value)}")
    if ".." in value or value.startswith("."):
        raise ValueError(
            f"must not contain '..' or start with '.' (it names a folder); got {shown(value)}"
        )
    if value != value.strip():
        raise ValueError(f"must not start or end with a space; got {shown(value)}")
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
