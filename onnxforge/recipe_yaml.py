"""Reading recipe YAML: duplicate keys refused, line numbers kept for messages.

PyYAML's safe_load keeps the last of two equal keys and forgets where each value came from; a
recipe error should name the line. The composed node tree keeps every key's position, so errors
found later (by the schema, by the preflight) are mapped back to the line of the offending key.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from onnxforge.errors import RecipeError


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` and `1e6` as floats (YAML 1.2; YAML 1.1 wants `1.0e-3`)."""


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
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _refuse_duplicates(node, [], source, set(), aliases)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = error.problem or error.context or "unreadable"
        raise RecipeError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{source}: not valid YAML: {str(error).splitlines()[0]}") from None
    finally:
        loader.dispose()


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
