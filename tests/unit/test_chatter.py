"""Third-party chatter goes to DEBUG unless verbose; our own warnings and all errors still show.

Each case runs in a fresh interpreter: the routing changes process-wide state (warnings, logging
handlers, environment variables that libraries read when they load).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A third-party package (its own module name, outside onnxforge) and one of our modules, each
# issuing a warning; ONNX Runtime's shape inference logging a warning and an error.
SCRIPT = textwrap.dedent(
    """
    import logging, sys, types, warnings
    from onnxforge.chatter import route_third_party_output

    route_third_party_output(sys.argv[1] == "verbose" or None)
    sys.path.insert(0, sys.argv[2])
    import chattylib

    chattylib.warn()
    ours = types.ModuleType("onnxforge.fake_stage")
    exec("import warnings\\ndef warn():\\n    warnings.warn('OURS-WARNING', UserWarning)",
         ours.__dict__)
    ours.warn()
    shape_inference = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    shape_inference.warning("ORT-SHAPE-WARNING")
    shape_inference.error("ORT-SHAPE-ERROR")
    logging.getLogger("onnxforge.stage").warning("OUR-LOG-WARNING")
    """
)


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("ONNXFORGE_VERBOSE",)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    environment.pop("TORCH_LOGS", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


@pytest.fixture
def chattylib(tmp_path: Path) -> Path:
    package = tmp_path / "chattylib"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import warnings\n\ndef warn():\n    warnings.warn('CHATTY-WARNING', FutureWarning)\n"
    )
    return tmp_path


def test_third_party_warnings_and_logs_are_hidden_by_default(chattylib: Path) -> None:
    result = _run(SCRIPT, "quiet", str(chattylib))
    assert result.returncode == 0, result.stderr
    assert "CHATTY-WARNING" not in result.stderr
    assert "ORT-SHAPE-WARNING" not in result.stderr
    # ours and errors still show
    assert "OURS-WARNING" in result.stderr
    assert "ORT-SHAPE-ERROR" in result.stderr
    assert "OUR-LOG-WARNING" in result.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_shows_third_party_output(chattylib: Path, how: str) -> None:
    mode, env = ("verbose", {}) if how == "flag" else ("default", {"ONNXFORGE_VERBOSE": "1"})
    result = _run(SCRIPT, mode, str(chattylib), env=env)
    assert result.returncode == 0, result.stderr
    for text in ("CHATTY-WARNING", "ORT-SHAPE-WARNING", "OURS-WARNING", "ORT-SHAPE-ERROR"):
        assert text in result.stderr, (text, result.stderr)


def test_routed_chatter_reaches_debug_logging(chattylib: Path) -> None:
    debug = SCRIPT.replace(
        "route_third_party_output(",
        "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')\n"
        "route_third_party_output(",
    )
    result = _run(debug, "quiet", str(chattylib))
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("DEBUG onnxforge.third_party") and "CHATTY-WARNING" in line
        for line in lines
    ), result.stderr
    assert any(
        line.startswith("DEBUG onnxforge.third_party") and "ORT-SHAPE-WARNING" in line
        for line in lines
    ), result.stderr


def test_routing_sets_the_native_loggers_and_leaves_a_users_choice() -> None:
    code = (
        "import os\nfrom onnxforge.chatter import route_third_party_output\n"
        "route_third_party_output()\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['TORCH_LOGS'],"
        " os.environ['ONNXFORGE_VERBOSE'])\n"
    )
    assert _run(code).stdout.split() == ["2", "-all", "0"]
    assert _run(code, env={"TF_CPP_MIN_LOG_LEVEL": "0"}).stdout.split() == ["0", "-all", "0"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_torch_exporter_warnings_are_hidden_unless_verbose(tmp_path: Path) -> None:
    """A real dynamo export: torch's exporter logs "torchvision is not installed" four times."""
    code = textwrap.dedent(
        """
        import logging, sys
        from onnxforge.chatter import route_third_party_output

        route_third_party_output(sys.argv[1] == "verbose" or None)
        import torch

        model = torch.nn.Linear(4, 2).eval()
        torch.onnx.export(model, (torch.zeros(1, 4),), sys.argv[2], dynamo=True, verbose=False)
        logging.getLogger("torch.onnx._internal.exporter").error("TORCH-ERROR")
        """
    )
    quiet = _run(code, "quiet", str(tmp_path / "quiet.onnx"))
    assert quiet.returncode == 0, quiet.stderr
    assert "torchvision is not installed" not in quiet.stderr
    assert "TORCH-ERROR" in quiet.stderr  # torch's errors still show
    verbose = _run(code, "verbose", str(tmp_path / "verbose.onnx"))
    assert verbose.stderr.count("torchvision is not installed") == 4, verbose.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_validate_prints_no_tensorflow_start_up_lines_unless_verbose() -> None:
    """`onnxforge validate` builds the Keras model, so TensorFlow loads; its C++ notes (the oneDNN
    notice, absl's "before InitializeLog" line) went to stderr before."""
    command = [str(Path(sys.executable).parent / "onnxforge"), "validate"]
    recipe = "configs/digits_keras.yaml"
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONNXFORGE_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "TORCH_LOGS")
    }
    quiet = subprocess.run(
        [*command, recipe], capture_output=True, text=True, cwd=REPO, env=environment, timeout=300
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "valid recipe 'digits-keras'" in quiet.stdout
    assert quiet.stderr == ""
    verbose = subprocess.run(
        [*command, recipe, "--verbose"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "oneDNN" in verbose.stderr and "absl::InitializeLog" in verbose.stderr


def test_help_stays_free_of_heavy_imports() -> None:
    code = (
        "import sys\nfrom flows.cli import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime', 'prefect', 'mlflow')"
        " if m in sys.modules))\n"
    )
    result = _run(code)
    assert "--verbose" in result.stdout
    assert result.stdout.strip().endswith("[]"), result.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["validate", "r.yaml"], False),
        (["validate", "r.yaml", "--verbose"], True),
        (["-v", "validate", "r.yaml"], True),
        (["verify", "-v", "model"], True),
    ],
)
def test_verbose_is_taken_before_or_after_the_command(argv: list[str], expected: bool) -> None:
    from flows.cli import _parser

    assert _parser().parse_args(argv).verbose is expected


# onnxsim reports each of its output checks with print("Checking i/n..."), on stdout.
ONNXSIM_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from onnxforge.chatter import route_third_party_output
    from onnxforge.variants.simplified import SimplifySettings, make_simplified

    route_third_party_output(sys.argv[1] == "verbose" or None)
    work = Path(sys.argv[2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              str(work / "m.onnx"))
    make_simplified(work / "m.onnx", SimplifySettings(check_n=2), work / "s.onnx",
                    np.ones((4, 3), np.float32))
    print("SIMPLIFIED", (work / "s.onnx").exists())
    """
)


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_onnxsim_check_lines_are_hidden_unless_verbose(tmp_path: Path, mode: str) -> None:
    result = _run(ONNXSIM_SCRIPT, mode, str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SIMPLIFIED True" in result.stdout
    assert ("Checking 0/2" in result.stdout) == (mode == "verbose"), result.stdout


TRANSFORMERS_SCRIPT = textwrap.dedent(
    """
    import sys
    from onnxforge.chatter import route_third_party_output
    from onnxforge.adapters.hf_models import _transformers

    route_third_party_output(sys.argv[1] == "verbose" or None)
    transformers = _transformers()
    transformers.utils.logging.get_logger("transformers.modeling_utils").warning("HF-WARNING")
    """
)


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_transformers_warnings_are_hidden_unless_verbose(mode: str) -> None:
    pytest.importorskip("transformers", reason="the `transformers` extra")
    result = _run(TRANSFORMERS_SCRIPT, mode)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("HF-WARNING" in result.stderr) == (mode == "verbose"), result.stderr
