"""Tests are honest about their kind: tests/unit trains no model and starts no server or flow run
(`make test-fast` runs it in seconds); whatever does lives in tests/integration or tests/flows.

The check reads each file's syntax tree, and the Python code in its string constants (what a test
hands to `python -c`), for the markers of the tests that were moved out of tests/unit."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent

# Names that train a model or start a server or a flow run: onnxforge's trainer, the fixtures and
# helpers of tests/conftest.py and tests/servers.py, the flow itself and its embedded server.
NAMES = {
    "train_model": "trains a model (onnxforge.training.train_model)",
    "prefect_test_harness": "starts a Prefect test server",
    "prefect_harness": "starts a Prefect test server (tests/conftest.py fixture)",
    "mlflow_server": "starts an `mlflow server` (tests/servers.py fixture)",
    "MlflowServer": "uses an `mlflow server` (tests/servers.py)",
    "start_servers": "starts the Prefect and MLflow servers",
    "start_embedded_server": "starts the CLI's embedded Prefect server",
    "onnx_pipeline": "runs the whole flow",
}
# Modules whose import means the same: their helpers train models or start servers.
MODULES = {
    "tests.servers": "starts servers (tests/servers.py)",
    "tests.byo_fixtures": "trains models (tests/byo_fixtures.py)",
    "tests.fixed_batch_fixtures": "trains a model (tests/fixed_batch_fixtures.py)",
    "flows.onnx_pipeline": "runs the whole flow",
    "flows.embedded_server": "starts the CLI's embedded Prefect server",
    "prefect.testing": "starts a Prefect test server",
    "onnxforge.training": "trains a model (only helpers without training are allowed)",
}
# Helpers of onnxforge.training that train nothing.
TRAINING_HELPERS = {"_accuracy", "final_metrics"}
# Method calls that train: Keras/scikit-learn fit, a PyTorch backward pass.
METHODS = {"fit": "trains a model (.fit)", "backward": "trains a model (.backward)"}
RUN_COMMAND = re.compile(r"""(onnxforge|flows\.cli|\bmain\b).*['"]run['"]""", re.DOTALL)
FLOW_CALL = re.compile(r"""([\w.]+\.)?main\(\s*\[\s*['"]run['"]""")
SERVER_COMMAND = re.compile(r"""['"](mlflow|prefect)['"]\s*,\s*['"](server|worker)['"]""")


def _module_findings(tree: ast.AST, line_offset: int = 0) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def add(node: ast.AST, why: str) -> None:
        found.append((line_offset + getattr(node, "lineno", 0), why))

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in NAMES:
            add(node, NAMES[node.id])
        elif isinstance(node, ast.arg) and node.arg in NAMES:  # a fixture asked for by name
            add(node, NAMES[node.arg])
        elif isinstance(node, ast.Attribute):
            if node.attr in NAMES:
                add(node, NAMES[node.attr])
            elif node.attr == "optim":
                add(node, "trains a model (torch.optim)")
            elif node.attr == "slow" and isinstance(node.value, ast.Attribute):
                add(node, "is marked slow (pytest.mark.slow)")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in METHODS:
                add(node, METHODS[node.func.attr])
            call = ast.unparse(node)
            if FLOW_CALL.match(call) and "--help" not in call:  # the CLI's main(["run", ...])
                add(node, f"runs the flow: {call}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for module in modules:
                for forbidden, why in MODULES.items():
                    if module != forbidden and not module.startswith(forbidden + "."):
                        continue
                    names = (
                        {a.name for a in node.names} if isinstance(node, ast.ImportFrom) else set()
                    )
                    if forbidden == "onnxforge.training" and names and names <= TRAINING_HELPERS:
                        continue
                    add(node, f"imports {module}: {why}")
            for alias in node.names:
                if alias.name in NAMES:
                    add(node, NAMES[alias.name])
        elif isinstance(node, ast.List | ast.Tuple):  # a command line: subprocess.run([...])
            text = ast.unparse(node)
            if "--help" not in text and RUN_COMMAND.search(text):
                add(node, f"runs the flow: {text}")
            if SERVER_COMMAND.search(text):
                add(node, f"starts a server: {text}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            code = node.value
            if "start_servers" in code:
                add(node, "starts the Prefect and MLflow servers")
            if "\n" in code or ";" in code:  # code for `python -c`: checked the same way
                try:
                    inner = ast.parse(code)
                except SyntaxError:
                    continue
                found.extend(_module_findings(inner, line_offset + node.lineno - 1))
    return found


def findings(path: Path) -> list[str]:
    """What in `path` trains a model or starts a server or a flow run, as 'file:line: why'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    relative = path.relative_to(TESTS.parent)
    return [f"{relative}:{line}: {why}" for line, why in sorted(set(_module_findings(tree)))]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (TESTS / "unit").glob("*.py") if p.name != Path(__file__).name),
    ids=lambda p: p.name,
)
def test_unit_tests_train_nothing_and_start_no_server(path: Path) -> None:
    assert findings(path) == [], (
        "tests/unit trains no model and starts no server or flow run: move this file to "
        "tests/integration (git mv), or build the model untrained / the ONNX file in tmp_path"
    )


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (TESTS / "integration").glob("test_*.py")),
    ids=lambda p: p.name,
)
def test_integration_tests_are_there_for_a_reason(path: Path) -> None:
    """The other direction, and the check's own check: each file moved out of tests/unit is
    caught by the markers above (one caught by none belongs back in tests/unit)."""
    assert findings(path), f"{path.name} neither trains nor starts a server: move it to tests/unit"


@pytest.mark.parametrize(
    "code",
    [
        "from onnxforge.training import train_model\n",
        "def test_x(prefect_harness): ...\n",
        "def test_x(mlflow_server): ...\n",
        "from tests.servers import free_port\n",
        "from tests.byo_fixtures import torch_module\n",
        "model.fit(x, y, epochs=3)\n",
        "loss.backward()\n",
        "opt = torch.optim.Adam(params)\n",
        "subprocess.run([sys.executable, '-m', 'flows.cli', 'run', str(path)])\n",
        "subprocess.run(['onnxforge', 'run', 'configs/digits_cnn.yaml'])\n",
        "subprocess.Popen(['mlflow', 'server', '--port', '5000'])\n",
        "subprocess.run(['bash', 'deployments/start_servers.sh'])\n",
        'CODE = \'from flows.cli import main\\nmain(["run", "x.yaml"])\\n\'\n',
        "pytestmark = pytest.mark.slow\n",
    ],
)
def test_the_check_catches_training_and_servers(code: str) -> None:
    assert _module_findings(ast.parse(code))


@pytest.mark.parametrize(
    "code",
    [
        "from onnxforge.training import _accuracy\n",
        "def test_x(mlflow_store): ...\n",
        "subprocess.run([onnxforge, 'validate', recipe])\n",
        'CODE = \'from flows.cli import main\\nmain(["run", "--help"])\\n\'\n',
        "model = torch.nn.Linear(4, 2).eval()\n",
    ],
)
def test_the_check_allows_untrained_models_stores_and_validate(code: str) -> None:
    assert _module_findings(ast.parse(code)) == []
