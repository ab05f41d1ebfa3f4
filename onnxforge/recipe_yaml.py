"""Reading recipe YAML: duplicate keys refused, line numbers kept for messages.

PyYAML's safe_load keeps the last of two equal keys and forgets where each value came from; a
recipe error should name the line. The composed node tree keeps every key's position, so errors
found later (by the schema, by the preflight) are mapped back to the line of the offending key.

Parsing is bounded: a recipe file of at most MAX_BYTES, UTF-8; values nested at most MAX_DEPTH
deep; at most MAX_VALUES values once aliases are expanded (a 1 KB "billion laughs" document
would otherwise expand to 10^9 values when validated or shown). Override values from the API
are held to the same limits (check_value_bounds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from onnxforge.errors import RecipeError

MAX_BYTES = 1 << 20  # a recipe is a few KB of settings
MAX_DEPTH = 32  # the deepest recipe field (parity.tolerances.<variant>.atol) is 4 levels down
MAX_VALUES = 100_000  # values (keys, items, scalars), an alias counted each time it is used


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters: an error message never renders a huge value."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters shown"
    return f"{text[:limit]}... ({size})"


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` and `1e6` as floats (YAML 1.2; YAML 1.1 wants `1.0e-3`),
    and refuses values nested deeper than MAX_DEPTH before composing them (PyYAML's composer
    recurses once per level: 20,000 nested brackets raise RecursionError)."""

    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, source: str, aliases: bool = True) -> tuple[Any, Node | None]:
    """(data, node tree) of one YAML document; RecipeError naming the line on bad YAML.

    aliases=False refuses `*anchor` references (an override value from the API could otherwise
    expand a few bytes into billions of values).
    """
    loader = None
    try:
        loader = RecipeLoader(text)  # refuses NUL and other unprintable characters
        node = loader.get_single_node()
        if node is None:
            return None, None
        _refuse_duplicates(node, [], source, set(), aliases)
        _measure(node, source, {}, set())
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = error.problem or error.context or "unreadable"
        raise RecipeError(f"{where}: not valid YAML: {problem}") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise RecipeError(
            f"{source}:{line}: not valid YAML: {str(error).splitlines()[0]}"
        ) from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{source}: not valid YAML: {str(error).splitlines()[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: Path) -> tuple[Any, Node | None]:
    """load_yaml of a file: at most MAX_BYTES, UTF-8; RecipeError naming the file otherwise."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise RecipeError(f"{path}: cannot read the recipe ({error.strerror or error})") from None
    if len(raw) > MAX_BYTES:
        raise RecipeError(
            f"{path}: the recipe file is larger than {MAX_BYTES} bytes (1 MiB); a recipe holds "
            "settings, not data"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise RecipeError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
            f"{error.start}); save the recipe as UTF-8"
        ) from None
    return load_yaml(text, str(path))


def _measure(
    node: Node, source: str, sizes: dict[int, tuple[int, int]], open_: set[int]
) -> tuple[int, int]:
    """(values, depth) of `node` with every alias expanded; RecipeError past MAX_VALUES or
    MAX_DEPTH, or for an alias inside the value it names. Each node is walked once (an alias
    reuses the size of the node it names), so a billion laughs costs its own size to refuse."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    where = f"{source}:{node.start_mark.line + 1}"
    if key in open_:
        raise RecipeError(f"{where}: not valid YAML: an alias (*name) inside the value it names")
    open_.add(key)
    if isinstance(node, MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, SequenceNode) else []
    values, depth = 1, 1
    for child in children:
        child_values, child_depth = _measure(child, source, sizes, open_)
        values, depth = values + child_values, max(depth, child_depth + 1)
        if values > MAX_VALUES:
            raise RecipeError(
                f"{source}: not valid YAML: more than {MAX_VALUES} values once aliases (*name) "
                "are expanded; write the values out"
            )
        if depth > MAX_DEPTH:
            raise RecipeError(
                f"{where}: not valid YAML: nested deeper than {MAX_DEPTH} levels once aliases "
                "(*name) are expanded"
            )
    open_.discard(key)
    sizes[key] = (values, depth)
    return values, depth


def check_value_bounds(value: Any, what: str) -> None:
    """A value built elsewhere (JSON from the API): at most MAX_VALUES values, MAX_DEPTH deep,
    strings of at most MAX_BYTES characters; RecipeError naming `what` otherwise. A value that
    holds itself is refused as too deep."""
    stack, count = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise RecipeError(f"{what}: more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise RecipeError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str) and len(item) > MAX_BYTES:
            raise RecipeError(f"{what}: a string longer than {MAX_BYTES} characters")
        if isinstance(item, dict):
            stack += [(child, depth + 1) for pair in item.items() for child in pair]
        elif isinstance(item, (list, tuple)):
            stack += [(child, depth + 1) for child in item]


def _refuse_duplicates(
    node: Node, path: list[str], source: str, seen_nodes: set[int], aliases: bool = True
) -> None:
    if id(node) in seen_nodes:  # an alias of a node already walked
        if not aliases:
            raise RecipeError(f"{source}: not valid YAML: aliases (*name) are not accepted here")
        return
    seen_nodes.add(id(node))
    if isinstance(node, MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first_line:
                field = dotted([*path, key.value])
                raise RecipeError(
                    f"{source}:{line}: {field}: duplicate key (first at line "
                    f"{first_line[key.value]}); give each key once"
                )
            first_line[key.value] = line
            _refuse_duplicates(value, [*path, key.value], source, seen_nodes, aliases)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, [*path, f"[{index}]"], source, seen_nodes, aliases)


def dotted(parts: list[str]) -> str:
    """['a', 'b', '[0]'] -> 'a.b[0]'."""
    return ".".join(parts).replace(".[", "[")


def line_of(node: Node | None, parts: list[str | int]) -> int | None:
    """The line of the deepest key (or list item) of `parts` that the document has."""
    line = None
    for part in parts:
        if isinstance(node, MappingNode):
            match = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, ScalarNode) and key.value == str(part)
                ),
                None,
            )
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


_FIELD = re.compile(r"^([A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*|\[\d+\])*)")


def field_parts(field: str) -> list[str | int]:
    """'benchmark.providers[1]' -> ['benchmark', 'providers', 1]."""
    parts: list[str | int] = []
    for piece in field.split("."):
        name, *indexes = piece.split("[")
        parts.append(name)
        parts += [int(index.rstrip("]")) for index in indexes if index.rstrip("]").isdigit()]
    return parts


def leading_field(message: str) -> str | None:
    """The dotted field a message starts with ('train.epochs: ...' -> 'train.epochs')."""
    match = _FIELD.match(message)
    return match.group(1) if match and message[match.end() :].startswith(":") else None
