"""More bad inputs refused before any work with one line and exit 2: allow-listed modules that
fail at import, export axes the model's inputs do not have, a seed out of range, kwargs the
architecture does not take, a Keras file with a Lambda layer. Inputs that `validate` used to
pass (the axes) are also refused by `run` before it starts anything.

And a recipe whose int8 variant has no `simplified` to quantize, which validate passes and the
flow runs: its framework baseline is measured (the measuring process reads the recipe back).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tests.conftest import REPO
from tests.recipe_files import at, write_recipe


def _module(name: str, body: str) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    """A module of the user's own in the working folder, allow-listed, named by the recipe."""

    def setup(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        (folder / f"{name}.py").write_text(body)
        monkeypatch.chdir(folder)
        monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", name)
        return {"model.architecture": f"{name}:Net", "model.kwargs": {}}

    return setup


def _lambda_keras(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import keras

    inputs = keras.Input((8, 8, 1))
    doubled = keras.layers.Lambda(lambda tensor: tensor * 2.0)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(10)(doubled)).save(folder / "lambda.keras")
    return {
        "model": {"framework": "keras", "file": "lambda.keras"},
        "export.exporter": None,
        "dataset.sample_shape": [8, 8, 1],
    }


def _change(change: dict[str, Any]) -> Callable[[Path, pytest.MonkeyPatch], dict[str, Any]]:
    return lambda folder, monkeypatch: change


AXES_BEYOND_RANK = _change({"export.dynamic_axes": {0: "batch", 5: "extra"}})
AXES_MISSPELLED = _change({"export.dynamic_axes": {"inptu": {0: "batch"}}})
AXES_EMPTY = _change({"export.dynamic_axes": {}})
NO_BATCH = (
    "export.dynamic_axes: input 'input' has no dynamic batch (dimension 0), so the export would "
    "fix its batch at the export example's size and the benchmark's batch sizes could not run; "
    "expected dimension 0 for every input (input), e.g. {0: batch}"
)

# (id, setup -> recipe change, needle of the blamed line, expected message; {dir}: tmp_path)
CASES = [
    (
        "allow-listed module with a SyntaxError",
        _module("broken_syntax", "class Net(:\n    pass\n"),
        "architecture:",
        "model.architecture: cannot import 'broken_syntax:Net': SyntaxError in "
        "{dir}/broken_syntax.py line 1: invalid syntax",
    ),
    (
        "allow-listed module that raises at import",
        _module("raises_at_import", "import os\n\nraise RuntimeError('no GPU here')\n"),
        "architecture:",
        "model.architecture: cannot import 'raises_at_import:Net': importing raises_at_import "
        "raised RuntimeError at {dir}/raises_at_import.py:3: no GPU here",
    ),
    (
        "allow-listed module that exits at import",
        _module("exits_at_import", "import sys\n\nsys.exit(3)\n"),
        "architecture:",
        "model.architecture: cannot import 'exits_at_import:Net': importing exits_at_import "
        "raised SystemExit at {dir}/exits_at_import.py:3: 3",
    ),
    (
        "dynamic axis beyond the input's rank",
        AXES_BEYOND_RANK,
        "dynamic_axes:",
        "export.dynamic_axes: dimension 5 (extra) of input 'input' does not exist: the input has "
        "4 dimensions (0..3, the batch first)",
    ),
    (
        "dynamic axes of a misspelled input",
        AXES_MISSPELLED,
        "inptu:",
        "export.dynamic_axes.inptu: the model has no input named 'inptu'; expected one of input",
    ),
    ("no dynamic axes", AXES_EMPTY, "dynamic_axes:", NO_BATCH),
    (
        "axes without the batch",
        _change({"export.dynamic_axes": {2: "h"}}),
        "dynamic_axes:",
        NO_BATCH,
    ),
    (
        "train seed out of range",
        _change({"train.seed": -1}),
        "seed: -1",
        "train.seed: expected an integer 0..4294967295 (2**32 - 1); got -1",
    ),
    (
        "kwarg the architecture does not take",
        _change({"model.kwargs": {"channels": 16, "hidden": 64, "dropout": 1}}),
        "kwargs:",
        "model.kwargs: 'small_cnn' does not take {'channels': 16, 'dropout': 1, 'hidden': 64}: "
        "SmallCNN.__init__() got an unexpected keyword argument 'dropout'; expected the "
        "arguments its constructor takes",
    ),
    (
        "keras file with a Lambda layer",
        _lambda_keras,
        "file:",
        "model.file: {dir}/lambda.keras cannot be loaded: it has a Lambda layer, whose Python "
        "code onnxforge does not run (model files load in Keras safe mode: a model file is data, "
        "not code); save the model without Lambda layers",
    ),
]


@pytest.mark.parametrize(
    ("setup", "needle", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validate_refuses_with_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: Callable[[Path, pytest.MonkeyPatch], dict[str, Any]],
    needle: str,
    expected: str,
) -> None:
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "home"))
    recipe = write_recipe(tmp_path, setup(tmp_path, monkeypatch))
    assert main(["validate", str(recipe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {at(recipe, needle)}: {expected.replace('{dir}', str(tmp_path))}"]


@pytest.mark.parametrize(
    ("setup", "needle", "expected"),
    [c[1:] for c in CASES if c[1] in (AXES_BEYOND_RANK, AXES_MISSPELLED, AXES_EMPTY)],
    ids=["axis beyond rank", "misspelled input", "no dynamic axes"],
)
def test_run_refuses_what_validate_used_to_pass_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: Callable[[Path, pytest.MonkeyPatch], dict[str, Any]],
    needle: str,
    expected: str,
) -> None:
    recipe = write_recipe(tmp_path, setup(tmp_path, monkeypatch))
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(recipe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ONNXFORGE_HOME": str(state)},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"error: {at(recipe, needle)}: {expected}"]
    assert not state.exists(), "a refused recipe must not create any state"


def test_int8_alone_is_measured_with_its_framework_baseline(tmp_path: Path) -> None:
    """validate passes `variants: {int8-dynamic: {}}`; the benchmark's measuring process reads
    the recipe back and builds the framework baseline (it used to refuse the recipe there)."""
    from onnxforge.benchmark import bench_provider, benchmark_inputs
    from onnxforge.export import export_model
    from onnxforge.preflight import load_and_check
    from onnxforge.records import BenchContenders
    from onnxforge.training import train_model
    from tests.conftest import data_of

    change = {
        "variants": {"int8-dynamic": {}},
        "train.epochs": 1,
        "benchmark.warmup": 1,
        "benchmark.iterations": 3,
        "benchmark.rounds": 2,
        "benchmark.batch_sizes": [1],
        "benchmark.providers": ["CPUExecutionProvider"],
    }
    recipe = load_and_check(str(write_recipe(tmp_path, change)))
    data = data_of(recipe)
    trained = train_model(recipe, tmp_path, lambda *_: None, data)
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data)
    contenders = BenchContenders(trained=trained, artifacts=(fp32,))
    features = benchmark_inputs(data, tmp_path)
    rows = bench_provider(recipe, "CPUExecutionProvider", contenders, features, data)
    baseline = [row for row in rows if row.source == "framework"]
    assert [(row.variant, row.status) for row in baseline] == [("pytorch-eager", "ok")], [
        row.reason for row in rows
    ]
