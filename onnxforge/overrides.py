"""Dotted overrides (`--set train.epochs=5`, the flow's `overrides` parameter) applied to a recipe.

Keys are dotted; a segment may hold hyphens (`variants.int8-static.per_channel`) or be quoted
(`variants."int8-static".per_channel`). String values are read as YAML, like `--set`; numbers,
booleans and lists (JSON values from the Prefect form or API) are used as they are. Keys and
values are bounded (onnxforge.recipe_yaml: MAX_DEPTH, MAX_VALUES, MAX_BYTES), and a message
shows at most the start of a long value.

Overrides are untrusted: they may not choose code or files (refuse_protected_changes) nor loosen
the promotion bar (refuse_lowered_bar), unless the operator opts in (onnxforge.trust).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from onnxforge.errors import RecipeError
from onnxforge.recipe_yaml import MAX_BYTES, MAX_DEPTH, check_value_bounds, load_yaml, shown
from onnxforge.trust import (
    SAME,
    TRUSTED_BAR_ENV,
    TRUSTED_OVERRIDES_ENV,
    bar_trusted,
    overrides_trusted,
)

_SEGMENT = re.compile(r'"([^"]+)"|\'([^\']+)\'|([A-Za-z_][\w\-]*)')
_MISSING = object()
MAX_KEY = 256  # characters in a dotted key; the longest recipe field is under 60


def split_key(key: str) -> list[str]:
    """'a.b-c."d.e"' -> ['a', 'b-c', 'd.e']; RecipeError on anything else."""
    if not isinstance(key, str) or len(key) > MAX_KEY or key.count(".") >= MAX_DEPTH:
        raise RecipeError(
            f"override {shown(key)}: expected a dotted key of at most {MAX_KEY} characters and "
            f"{MAX_DEPTH} segments, e.g. train.epochs"
        )
    parts, position = [], 0
    while True:
        match = _SEGMENT.match(key, position)
        if match is None:
            break
        parts.append(next(group for group in match.groups() if group is not None))
        position = match.end()
        if position == len(key):
            return parts
        if key[position] != ".":
            break
        position += 1
    raise RecipeError(
        f"override {shown(key)}: expected a dotted key, e.g. train.epochs or "
        'variants."int8-static".per_channel'
    )


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turn `key=value` strings (CLI `--set`) into a mapping; a malformed pair is an error."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise RecipeError(
                f"--set {shown(pair)}: expected key=value with a dotted key, e.g. train.epochs=5"
            )
        split_key(key)
        overrides[key] = value
    return overrides


def _value(key: str, raw: Any, source: str) -> Any:
    if not isinstance(raw, str):
        check_value_bounds(raw, f"{source}: override {key}")
        return copy.deepcopy(raw)
    if raw == "":
        return ""
    if len(raw) > MAX_BYTES:
        raise RecipeError(
            f"{source}: override {key}: a value longer than {MAX_BYTES} characters "
            f"(value {shown(raw)})"
        )
    try:
        value, _ = load_yaml(raw, "", aliases=False)
    except RecipeError as error:  # ":1: not valid YAML: ..." -> name the override instead
        reason = str(error).partition(" not valid YAML: ")[2]
        raise RecipeError(
            f"{source}: override {key}: not valid YAML: {reason} (value {shown(raw)})"
        ) from None
    return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of `data` with every override set; sections are created as needed."""
    result = copy.deepcopy(data)
    for key, raw in overrides.items():
        node = result
        *parents, leaf = split_key(key)
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: override {key}: {part!r} is not a section")
            node = child
        node[leaf] = _value(key, raw, source)
    return result


def get_dotted(data: Any, parts: list[str]) -> Any:
    """The value at `parts`, or a marker when the document lacks it."""
    for part in parts:
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def refuse_protected_changes(
    before: dict[str, Any],
    after: dict[str, Any],
    overrides: dict[str, Any],
    protected: list[str],
    source: str,
) -> None:
    """Overrides may tune values, never choose code or files: refuse a change to a protected field.

    Compared on the documents themselves, so replacing a whole section (`model={...}`) counts.
    """
    if not overrides or overrides_trusted():
        return
    changed = [
        field
        for field in protected
        if _exact(get_dotted(before, field.split(".")))
        != _exact(get_dotted(after, field.split(".")))
    ]
    # name a field the override sets before one it merely drops (model={...} without framework)
    changed.sort(key=lambda field: get_dotted(after, field.split(".")) is _MISSING)
    for field in changed[:1]:
        cause = _cause(field, overrides)
        raise RecipeError(
            f"{source}: override {cause}: overrides may not change {field} (recipe files choose "
            f"code and files; --set and flow parameters only tune values); set "
            f"{TRUSTED_OVERRIDES_ENV}=1 to allow it"
        )
    _refuse_waived_approval(before, after, source)


def _refuse_waived_approval(before: dict[str, Any], after: dict[str, Any], source: str) -> None:
    """A recipe that requires a person's approval keeps requiring it: an override may ask for
    approval, never waive it (anyone who can reach the API could otherwise move champion)."""
    parts = ["register", "approval"]
    if get_dotted(before, parts) == "required" and get_dotted(after, parts) != "required":
        raise RecipeError(
            f"{source}: override register.approval: overrides may not waive the approval the "
            f"recipe requires; set {TRUSTED_OVERRIDES_ENV}=1 to allow it"
        )


def _cause(field: str, overrides: dict[str, Any]) -> str:
    """The override that set `field`: its own key, or one that replaced a section holding it."""
    parts = field.split(".")
    return next(
        (key for key in overrides if split_key(key)[: len(parts)] == parts[: len(split_key(key))]),
        field,
    )


def refuse_lowered_bar(
    before: dict[str, Any], after: dict[str, Any], overrides: dict[str, Any], source: str
) -> None:
    """Overrides may tighten the promotion bar, never loosen it: refuse the first bar field
    (onnxforge.trust.PROMOTION_BAR, TOLERANCE_BAR) that the overrides moved the loose way.

    `before` and `after` are the bars of the recipe without and with the overrides (field ->
    (direction, value), every field given, defaults filled in). ONNXFORGE_TRUSTED_BAR=1 (or
    ONNXFORGE_TRUSTED_OVERRIDES=1) lets any change through.
    """
    if not overrides or bar_trusted():
        return
    for field, (direction, old) in before.items():
        new = after[field][1]
        if _no_looser(direction, old, new):
            continue
        cause, allow = _cause(field, overrides), f"set {TRUSTED_BAR_ENV}=1 to allow it"
        given = f"the recipe has {_bar_value(old)}, the override gives {_bar_value(new)}"
        if direction == SAME:
            raise RecipeError(
                f"{source}: override {cause}: overrides may not change {field} (the promotion "
                f"bar is the recipe's: {given}); {allow}"
            )
        raise RecipeError(
            f"{source}: override {cause}: overrides may only tighten {field} ({given}; "
            f"allowed: {_bar_value(old)} or {direction}); {allow}"
        )


def _no_looser(direction: str, old: Any, new: Any) -> bool:
    """True when `new` is as strict as `old` or stricter; None (unset) is the loosest value."""
    if old == new:  # the after-document is validated: no bool stands in for a number
        return True
    if direction == SAME or new is None:
        return False
    if old is None:
        return True
    return new < old if direction == "lower" else new > old


def _bar_value(value: Any) -> str:
    return "none (unset)" if value is None else shown(value, 40)


def _exact(value: Any) -> str:
    """A value compared with its types: 1, 1.0 and True are three different values here."""
    return json.dumps(value, sort_keys=True, default=repr) + repr(type(value))
