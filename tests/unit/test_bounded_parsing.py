"""Recipes and overrides are parsed within bounds: every hostile input below is refused before any
work, in one line that names the file (or the `--set`) and never shows a huge value, exit 2.

Bounds (onnxforge/recipe_yaml.py): a recipe of at most 1 MiB of UTF-8; values nested at most 32
deep; at most 100,000 values once aliases are expanded. Also here: a `--set` that causes an error
is named instead of a line of the recipe, and names that become folders refuse Unicode controls
and bidi overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import flows.cli
from flows.cli import main
from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from onnxforge.recipe import load_recipe
from tests.conftest import DEFAULT_RECIPE
from tests.recipe_files import at, write_recipe

LONGEST_LINE = 400  # characters: one readable line, whatever the input's size


@pytest.fixture(autouse=True)
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` must be refused before the flow starts."""
    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    monkeypatch.setattr(flows.cli, "_run", lambda *_, **__: pytest.fail("the run started"))


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with exactly one short line on stderr, which is returned."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, [line[:200] for line in lines[:5]]
    assert len(lines[0]) < LONGEST_LINE, lines[0][:LONGEST_LINE]
    return lines[0]


def recipe_bytes(folder: Path, data: bytes) -> Path:
    path = folder / "recipe.yaml"
    path.write_bytes(data)
    return path


def default_text() -> str:
    return DEFAULT_RECIPE.read_text()


# --- the recipe file --------------------------------------------------------------------------


def test_a_recipe_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = default_text().encode().replace(b"name: digits-cnn", b"name: digits-\xff\xfecnn")
    path = recipe_bytes(tmp_path, data)
    offset = data.index(b"\xff")
    line = data[:offset].count(b"\n") + 1
    expected = (
        f"error: {path}:{line}: not UTF-8 text (byte 0xff at offset {offset}); save the recipe "
        "as UTF-8"
    )
    assert refused(capsys, "validate", str(path)) == expected
    assert refused(capsys, "run", str(path)) == expected


def test_a_recipe_with_a_nul_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe_bytes(tmp_path, default_text().replace("digits-cnn", "digits\0cnn").encode())
    assert refused(capsys, "run", str(path)).startswith(
        f"error: {at(path, 'name: digits')}: not valid YAML: unacceptable character #x0000"
    )


def test_a_recipe_larger_than_a_mebibyte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recipe_bytes(tmp_path, (default_text() + "#" * (1 << 20)).encode())
    assert refused(capsys, "validate", str(path)) == (
        f"error: {path}: the recipe file is larger than 1048576 bytes (1 MiB); a recipe holds "
        "settings, not data"
    )


@pytest.mark.parametrize(
    "value", ["[" * 20_000 + "]" * 20_000, "{a: " * 20_000 + "1" + "}" * 20_000, "[" * 20_000]
)
def test_values_nested_20000_deep_in_a_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = recipe_bytes(tmp_path, default_text().replace("epochs: 15", f"epochs: {value}").encode())
    assert refused(capsys, "validate", str(path)) == (
        f"error: {at(path, 'epochs: ')}: not valid YAML: nested deeper than 32 levels"
    )


def billion_laughs() -> str:
    """A 1 KB document whose aliases expand to 9^9 (387 million) strings."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["alone", "in a field"])
def test_a_billion_laughs_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    laughs = billion_laughs()
    assert len(laughs) < 1100
    if where == "alone":
        text = laughs
    else:  # the value a typed field shows in its error message (the old MemoryError)
        nested = "x-laughs:\n" + "".join(f"  {line}\n" for line in laughs.splitlines())
        text = nested + default_text().replace("epochs: 15", "epochs: *i")
    path = recipe_bytes(tmp_path, text.encode())
    assert refused(capsys, "validate", str(path)) == (
        f"error: {path}: not valid YAML: more than 100000 values once aliases (*name) are "
        "expanded; write the values out"
    )
    with pytest.raises(RecipeError, match="more than 100000 values"):
        load_and_check(str(path))


def test_an_alias_inside_the_value_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = default_text().replace("batch_sizes: [1, 16]", "batch_sizes: &loop [1, *loop]")
    path = recipe_bytes(tmp_path, text.encode())
    assert refused(capsys, "validate", str(path)) == (
        f"error: {at(path, 'batch_sizes: &loop')}: not valid YAML: an alias (*name) inside the "
        "value it names"
    )


def test_aliases_that_nest_deeper_than_the_limit_once_expanded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each anchor is 20 levels deep, within the limit; the second holds the first."""
    deep = "x-a: &a " + "[" * 20 + "1" + "]" * 20 + "\nx-b: " + "[" * 20 + "*a" + "]" * 20 + "\n"
    path = recipe_bytes(tmp_path, (deep + default_text()).encode())
    assert "nested deeper than 32 levels once aliases (*name) are expanded" in refused(
        capsys, "validate", str(path)
    )


def test_ordinary_anchors_still_work(tmp_path: Path) -> None:
    text = default_text().replace("batch_sizes: [1, 16]", "batch_sizes: [&one 1, 16]")
    text = text.replace("batch_size: 1}", "batch_size: *one}")
    assert text != default_text()
    path = recipe_bytes(tmp_path, text.encode())
    assert load_recipe(path).registry.objective.batch_size == 1


def test_a_huge_value_is_never_shown_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recipe(tmp_path, {"train.epochs": "x" * 100_000})
    line = refused(capsys, "validate", str(path))
    assert line.startswith(
        f"error: {at(path, 'epochs: ')}: train.epochs: Input should be a valid integer (got 'xxx"
    )
    assert line.endswith("... (100000 characters))")


# --- overrides: --set and the flow's `overrides` parameter --------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("value", ["[" * 20_000, "[" * 20_000 + "]" * 20_000, "- " * 20_000 + "1"])
def test_a_set_value_nested_20000_deep(
    capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    line = refused(capsys, command, str(DEFAULT_RECIPE), "--set", f"train.epochs={value}")
    assert line.startswith(
        f"error: {DEFAULT_RECIPE}: override train.epochs: not valid YAML: nested deeper than 32 "
        f"levels (value {value[:10]!r}"[:-1]
    )
    assert line.endswith(f"... ({len(value)} characters))")


def nested_list(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


def holds_itself() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (nested_list(20_000), "nested deeper than 32 levels"),
        (holds_itself(), "nested deeper than 32 levels"),
        (list(range(200_000)), "more than 100000 values"),
        ("[" * 20_000, "not valid YAML: nested deeper than 32 levels"),
        ("[&a 1, *a]", "not valid YAML: aliases (*name) are not accepted here"),
        ("x" * 2_000_000, "a value longer than 1048576 characters"),
    ],
    ids=["deep-json", "self-holding", "wide-json", "deep-yaml", "alias", "long-string"],
)
def test_the_flow_parameter_is_bounded_like_set(value: Any, expected: str) -> None:
    """The flow's `overrides` take JSON values as they are, strings as YAML."""
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(DEFAULT_RECIPE), {"benchmark.batch_sizes": value})
    message = str(caught.value)
    assert message.startswith(f"{DEFAULT_RECIPE}: override benchmark.batch_sizes: {expected}")
    assert len(message) < LONGEST_LINE


@pytest.mark.parametrize("key", ["a." * 20_000 + "b", "a" * 100_000])
def test_a_huge_set_key(capsys: pytest.CaptureFixture[str], key: str) -> None:
    line = refused(capsys, "run", str(DEFAULT_RECIPE), "--set", f"{key}=1")
    assert "expected a dotted key of at most 256 characters and 32 segments" in line
    with pytest.raises(RecipeError, match="expected a dotted key of at most 256"):
        load_and_check(str(DEFAULT_RECIPE), {key: 1})


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["benchmark.providers=[CUDAExecutionProvider]"],
            "override benchmark.providers: register.objective.provider: 'CPUExecutionProvider' "
            "is not in benchmark.providers",
        ),
        (
            ["benchmark.batch_sizes=[4]"],
            "override benchmark.batch_sizes: register.objective.batch_size: 1 is not in "
            "benchmark.batch_sizes [4]",
        ),
        (
            ["train.epochs=3", "train.enabled=false"],
            "override train.enabled: model.checkpoint: required when train.enabled is false",
        ),
        (
            ["dataset.source=npz"],
            "override dataset.source: dataset.path: required field is missing",
        ),
    ],
)
def test_an_error_a_set_causes_names_the_set_not_a_recipe_line(
    capsys: pytest.CaptureFixture[str], sets: list[str], expected: str
) -> None:
    argv = ["validate", str(DEFAULT_RECIPE)]
    for pair in sets:
        argv += ["--set", pair]
    assert refused(capsys, *argv) == f"error: {DEFAULT_RECIPE}: {expected}"
    overrides = dict(pair.split("=", 1) for pair in sets)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(DEFAULT_RECIPE), overrides)
    assert str(caught.value) == f"{DEFAULT_RECIPE}: {expected}"


def test_an_error_the_recipe_itself_has_keeps_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recipe(tmp_path, {"benchmark.providers": ["CUDAExecutionProvider"]})
    line = refused(capsys, "validate", str(path), "--set", "train.epochs=3")
    assert line == (
        f"error: {at(path, 'provider: CPUExecutionProvider')}: register.objective.provider: "
        "'CPUExecutionProvider' is not in benchmark.providers"
    )


# --- names that become folders ------------------------------------------------------------------

UNSAFE = {
    "\x85": "U+0085",  # NEL, a C1 control
    "\x9b": "U+009B",  # CSI, a C1 control (starts terminal escape sequences)
    "\u202a": "U+202A LEFT-TO-RIGHT EMBEDDING",
    "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "U+2066 LEFT-TO-RIGHT ISOLATE",
    "\u2069": "U+2069 POP DIRECTIONAL ISOLATE",
    "\u200b": "U+200B ZERO WIDTH SPACE",
    "\u2028": "U+2028 LINE SEPARATOR",
}


@pytest.mark.parametrize("char", list(UNSAFE), ids=list(UNSAFE.values()))
def test_names_refuse_unicode_controls_and_bidi_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str
) -> None:
    name = f"digits{char}nightly"
    path = write_recipe(tmp_path, {"mlflow.experiment": name})  # written escaped: "\u202E"
    assert yaml.safe_load(path.read_text())["mlflow"]["experiment"] == name
    expected = (
        f"mlflow.experiment: must not contain control characters (including bidi and other "
        f"format characters); got {name!r}, which holds {UNSAFE[char]}"
    )
    assert refused(capsys, "validate", str(path)) == f"error: {at(path, 'experiment:')}: {expected}"
    # from --set (a YAML double-quoted escape) and from the flow parameter (a JSON string)
    escaped = yaml.safe_dump(name).strip().removesuffix("...").strip()
    line = refused(capsys, "run", str(DEFAULT_RECIPE), "--set", f"mlflow.experiment={escaped}")
    assert line == f"error: {DEFAULT_RECIPE}: {expected}"
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(DEFAULT_RECIPE), {"mlflow.experiment": escaped})
    assert str(caught.value) == f"{DEFAULT_RECIPE}: {expected}"


def test_names_with_other_unicode_letters_are_fine(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, {"mlflow.experiment": "Ziffern nächtlich 数字"})
    assert load_recipe(path).mlflow.experiment == "Ziffern nächtlich 数字"
