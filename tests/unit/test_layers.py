"""The layers stay visible: flows -> tasks -> onnxforge, and heavy imports only where used."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _imports(package: str) -> dict[str, set[str]]:
    found = {}
    for path in (REPO / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("onnxforge", {"prefect", "flows", "tasks"}),
        ("tasks", {"flows"}),
    ],
)
def test_lower_layers_do_not_import_upper_ones(package: str, forbidden: set[str]) -> None:
    offenders = {
        path: names & forbidden for path, names in _imports(package).items() if names & forbidden
    }
    assert not offenders


def test_cli_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from flows import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'prefect', 'mlflow', 'tensorflow', 'onnx')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_importing_the_core_has_no_side_effects(tmp_path) -> None:
    code = "import onnxforge.recipe, onnxforge.tracking, onnxforge.registry, onnxforge.benchmark"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert list(tmp_path.iterdir()) == []


# Framework knowledge lives in onnxforge/adapters/: everywhere else asks an adapter.
FRAMEWORK_NAMES = {"pytorch", "keras", "onnx", "tensorflow"}


def _registered_names() -> set[str]:
    """Every framework and architecture the adapters register (a new one is covered here)."""
    from onnxforge.adapters import ADAPTERS

    return (
        FRAMEWORK_NAMES
        | set(ADAPTERS)
        | {a for info in ADAPTERS.values() for a in info.architectures}
    )


def _named_strings(node: ast.AST, names: set[str]) -> list[str]:
    """The registered names `node` is (a string) or holds (a tuple, list or set of strings)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [
        item.value
        for item in items
        if isinstance(item, ast.Constant) and isinstance(item.value, str) and item.value in names
    ]


def _branches_on_names(tree: ast.AST, names: set[str]) -> list[str]:
    """'line: name' wherever code compares with, matches on, or keys a mapping on a name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            operands = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
            operands = [ast.Constant(k.arg) for k in node.keywords if k.arg]
        else:
            continue
        found += [f"{node.lineno}: {name}" for op in operands for name in _named_strings(op, names)]
    return found


def _modules_outside_adapters() -> list:
    adapters = REPO / "onnxforge" / "adapters"
    paths = [*(REPO / "tasks").rglob("*.py"), *(REPO / "flows").rglob("*.py")]
    paths += [p for p in (REPO / "onnxforge").rglob("*.py") if not p.is_relative_to(adapters)]
    return sorted(paths)


def test_no_module_outside_the_adapters_branches_on_a_framework_or_architecture() -> None:
    """Stages ask the adapter (baseline name, fit checks, weight files, regression); a new
    framework or architecture is one change in onnxforge/adapters/, not a hunt through stages."""
    names = _registered_names()
    offenders = {
        str(path.relative_to(REPO)): hits
        for path in _modules_outside_adapters()
        if (hits := _branches_on_names(ast.parse(path.read_text()), names))
    }
    assert not offenders


@pytest.mark.parametrize(
    "code",
    [
        "if spec.framework == 'onnx': pass",
        "ok = spec.architecture in ('mlp', 'other')",
        "NAMES = {'keras': 'keras-tf-function'}",
        "name = NAMES['pytorch']",
        "match spec.architecture:\n    case 'hf_sequence_classifier': pass",
    ],
)
def test_the_layer_check_sees_each_way_of_branching_on_a_name(code: str) -> None:
    assert _branches_on_names(ast.parse(code), _registered_names())


def _module_graph() -> dict[str, set[str]]:
    """onnxforge module -> the onnxforge modules it imports at run time, function-level imports
    included (they hide a cycle, they do not remove it); `if TYPE_CHECKING:` blocks excluded.
    The checked-in graph had one: edge imported promotion's alias name while promotion imported
    edge's choice inside a function."""
    modules = {}
    for path in (REPO / "onnxforge").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        # A module's own parent packages are loaded before it in any case: not an edge.
        graph[name] = {
            t for t in targets if t in modules and t != name and not name.startswith(t + ".")
        }
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (module names, closed), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def test_the_core_has_no_import_cycle() -> None:
    assert _cycle(_module_graph()) == []


def test_the_cycle_check_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
