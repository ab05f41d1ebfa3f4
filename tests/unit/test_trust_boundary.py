"""The trust boundary and bad input refused before work: recipes may choose code and files,
overrides may not; import paths resolve inside the operator's allow-list; names that become
folders are checked; bad values, data and environments exit 2 with one line naming the field."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flows.cli import main
from onnxforge.errors import RecipeError
from onnxforge.preflight import load_and_check
from onnxforge.recipe import load_recipe
from onnxforge.variants import VARIANTS
from tests.conftest import DEFAULT_RECIPE, REPO
from tests.recipe_files import at, write_recipe


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, which is returned."""
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def os_system_recipe(folder: Path, marker: Path) -> Path:
    model = {
        "framework": "pytorch",
        "architecture": "os:system",
        "kwargs": {"command": f"touch {marker}"},
    }
    return write_recipe(folder, {"model": model})


# --- code: import paths and overrides -------------------------------------------------------


def test_an_import_path_outside_the_allow_list_is_refused_and_never_called(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONNXFORGE_IMPORT_MODULES", raising=False)
    marker = tmp_path / "MARKER"
    path = os_system_recipe(tmp_path, marker)
    line = refused(capsys, "validate", str(path))
    assert line == (
        f"error: {at(path, 'architecture:')}: model.architecture: import path 'os:system' is "
        "outside the import allow-list; name its module or a package above it in "
        "ONNXFORGE_IMPORT_MODULES (comma-separated, e.g. mypackage.models) to allow it "
        "(ONNXFORGE_IMPORT_MODULES is unset); built-in architectures need no entry"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "architecture", ["subprocess:run", "builtins:exec", "shutil:rmtree", "onnxforge.inputs:save"]
)
def test_other_dangerous_import_paths_are_refused(tmp_path: Path, architecture: str) -> None:
    path = write_recipe(tmp_path, {"model.architecture": architecture})
    with pytest.raises(RecipeError, match="ONNXFORGE_IMPORT_MODULES"):
        load_recipe(path)


def test_nothing_outside_the_allow_list_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "IMPORTED"
    (tmp_path / "loud_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nNet = None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "other_package, loud_module_not_this")
    path = write_recipe(tmp_path, {"model.architecture": "loud_module:Net"})
    with pytest.raises(RecipeError, match="outside the import allow-list"):
        load_and_check(str(path))
    assert not marker.exists() and "loud_module" not in sys.modules


@pytest.mark.parametrize(
    ("source", "architecture", "expected"),
    [
        ("import os\n", "gateway:os.system", "walks into module 'os'"),
        ("from os import system\n", "gateway:system", "defined in 'posix'"),
    ],
)
def test_an_allowed_module_is_no_gateway_to_other_modules(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    architecture: str,
    expected: str,
) -> None:
    marker = tmp_path / "MARKER"
    (tmp_path / "gateway.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "gateway")
    change = {"model.architecture": architecture, "model.kwargs": {"command": f"touch {marker}"}}
    path = write_recipe(tmp_path, change)
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(path))
    sys.modules.pop("gateway", None)
    assert str(caught.value).startswith(f"{at(path, 'architecture:')}: model.architecture: ")
    assert expected in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "sets",
    [
        ["model.architecture=os:system", "model.kwargs.command=touch {marker}"],
        ['model={architecture: "os:system", kwargs: {command: "touch {marker}"}}'],
        ["model.kwargs.channels=8"],
        ["model.checkpoint=/etc/hostname"],
        ["model.framework=onnx"],
        ["dataset={source: npz, path: /etc/x}"],
        ["dataset.path=/etc/passwd"],
    ],
    ids=["architecture", "model-section", "kwargs", "checkpoint", "framework", "dataset", "path"],
)
def test_overrides_cannot_choose_code_or_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    sets: list[str],
) -> None:
    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    marker = tmp_path / "MARKER"
    argv = ["validate", str(DEFAULT_RECIPE)]
    for pair in sets:
        argv += ["--set", pair.replace("{marker}", str(marker))]
    line = refused(capsys, *argv)
    assert line.startswith(f"error: {DEFAULT_RECIPE}: override ")
    assert "overrides may not change " in line and "ONNXFORGE_TRUSTED_OVERRIDES=1" in line
    assert not marker.exists()


def test_the_flow_parameter_is_checked_like_set() -> None:
    """The deployment path calls load_recipe with the flow's `overrides` (JSON values)."""
    with pytest.raises(RecipeError) as caught:
        load_and_check(str(DEFAULT_RECIPE), {"model": {"architecture": "os:system"}})
    assert str(caught.value).startswith(
        f"{DEFAULT_RECIPE}: override model: overrides may not change model.architecture "
    )


def test_the_operator_may_trust_overrides_but_not_widen_the_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONNXFORGE_TRUSTED_OVERRIDES", "1")
    monkeypatch.delenv("ONNXFORGE_IMPORT_MODULES", raising=False)
    assert load_recipe(DEFAULT_RECIPE, {"model.kwargs.channels": "8"}).model.kwargs["channels"] == 8
    marker = tmp_path / "MARKER"
    overrides = {"model.architecture": "os:system", "model.kwargs.command": f"touch {marker}"}
    with pytest.raises(RecipeError, match="outside the import allow-list"):
        load_and_check(str(DEFAULT_RECIPE), overrides)
    assert not marker.exists()


def test_overrides_may_tune_values_and_restate_protected_ones() -> None:
    recipe = load_recipe(
        DEFAULT_RECIPE,
        {
            "train.epochs": 3,  # JSON values from the Prefect form are used as they are
            "benchmark.batch_sizes": [1, 8],
            "model.architecture": "small_cnn",  # the same value: nothing changes
        },
    )
    assert (recipe.train.epochs, recipe.benchmark.batch_sizes) == (3, [1, 8])


def test_an_override_may_require_approval_but_never_waive_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    required = write_recipe(tmp_path, {"register.approval": "required"})
    with pytest.raises(RecipeError, match="override register.approval: overrides may not waive"):
        load_recipe(required, {"register.approval": "none"})
    assert load_recipe(DEFAULT_RECIPE, {"register.approval": "required"}).registry.approval == (
        "required"
    )


def test_a_protected_value_of_another_type_is_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """1, 1.0 and true compare equal in Python; as a module's argument they are not the same."""
    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    assert load_recipe(DEFAULT_RECIPE).model.kwargs["channels"] == 16
    with pytest.raises(RecipeError, match="overrides may not change model.kwargs"):
        load_recipe(DEFAULT_RECIPE, {"model.kwargs.channels": 16.0})


def test_a_deployment_takes_recipes_from_configs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxforge.trust import check_deployment_recipe

    monkeypatch.delenv("ONNXFORGE_TRUSTED_OVERRIDES", raising=False)
    configs = REPO / "configs"
    assert check_deployment_recipe("configs/digits_cnn.yaml", configs) == DEFAULT_RECIPE
    for outside in (str(tmp_path / "x.yaml"), "configs/../pyproject.toml", "/etc/passwd"):
        with pytest.raises(ValueError, match="takes a recipe from"):
            check_deployment_recipe(outside, configs)


# --- names that become folders ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mlflow.experiment", "/"),
        ("mlflow.experiment", "../../x"),
        ("mlflow.experiment", ".."),
        ("mlflow.experiment", ".hidden"),
        ("mlflow.experiment", "a\\b"),
        ("mlflow.experiment", "tab\there"),
        ("name", ".."),
        ("name", "a/b"),
        ("register.model_name", "x..y"),
    ],
)
def test_names_that_become_folders_are_checked(tmp_path: Path, field: str, value: str) -> None:
    path = write_recipe(tmp_path, {field: value})
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    written = yaml.safe_dump({field.split(".")[-1]: value}).strip()  # the line as written
    assert str(caught.value).startswith(f"{at(path, written)}: {field}: ")


def test_a_plain_experiment_name_with_spaces_is_fine(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, {"mlflow.experiment": "Digits nightly v2"})
    assert load_recipe(path).mlflow.experiment == "Digits nightly v2"


# --- strict values, YAML, overrides ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("train.epochs", True, "train.epochs: Input should be a valid integer (got true)"),
        ("train.epochs", 2.5, "train.epochs: Input should be a valid integer (got 2.5)"),
        ("train.epochs", "5", "train.epochs: Input should be a valid integer (got '5')"),
        ("train.learning_rate", True, "train.learning_rate: Input should be a valid number"),
        ("train.learning_rate", "0.1", "train.learning_rate: Input should be a valid number"),
        ("train.enabled", 1, "train.enabled: Input should be a valid boolean (got 1)"),
        ("benchmark.warmup", False, "benchmark.warmup: Input should be a valid integer"),
        ("variants.int8-static.samples", True, "variants.int8-static.samples: Input should be"),
        ("parity.tolerances.int8-dynamic.atol", True, "parity.tolerances.int8-dynamic.atol: "),
    ],
)
def test_strict_numbers_and_booleans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any, expected: str
) -> None:
    path = write_recipe(tmp_path, {field: value})
    line = refused(capsys, "validate", str(path))
    written = yaml.safe_dump({field.split(".")[-1]: value}).strip()
    assert line.startswith(f"error: {at(path, written)}: {expected}")


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("train.learning_rate", 1e6, "less than or equal to 10"),
        ("train.epochs", 1_000_000, "less than or equal to 10000"),
        ("train.batch_size", 10_000_000, "less than or equal to 65536"),
        ("benchmark.iterations", 10**9, "less than or equal to 100000"),
        ("benchmark.warmup", 10**6, "less than or equal to 10000"),
        ("benchmark.time_budget_s", 86400.0, "less than or equal to 3600"),
        ("register.approval_timeout_s", 10**8, "less than or equal to 604800"),
    ],
)
def test_hyperparameters_outside_sane_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: Any, bound: str
) -> None:
    path = write_recipe(tmp_path, {field: value})
    line = refused(capsys, "validate", str(path))
    written = yaml.safe_dump({field.split(".")[-1]: value}).strip()
    assert line.startswith(f"error: {at(path, written)}: {field}: ")
    assert bound in line


def test_yaml_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, {})
    path.write_text(path.read_text().replace("learning_rate: 0.002", "learning_rate: 2e-3"))
    assert load_recipe(path).train.learning_rate == 0.002
    assert load_recipe(DEFAULT_RECIPE, {"train.learning_rate": "1e-3"}).train.learning_rate == 1e-3


def test_duplicate_keys_are_refused_with_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    text = DEFAULT_RECIPE.read_text().replace("  epochs: 15\n", "  epochs: 15\n  epochs: 3\n")
    path.write_text(text)
    first = at(path, "epochs: 15").rpartition(":")[2]
    line = refused(capsys, "validate", str(path))
    assert line == (
        f"error: {at(path, 'epochs: 3')}: train.epochs: duplicate key (first at line {first}); "
        "give each key once"
    )


def test_invalid_yaml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain:\n  epochs: [15\n  batch_size: 64\n")
    line = refused(capsys, "validate", str(path))
    assert line.startswith(f"error: {path}:4: not valid YAML: ")


def test_a_set_value_that_is_not_yaml_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "validate", str(DEFAULT_RECIPE), "--set", "train.epochs=[")
    assert line.startswith(f"error: {DEFAULT_RECIPE}: override train.epochs: not valid YAML: ")
    assert line.endswith("(value '[')")


def test_an_override_value_may_not_use_yaml_aliases() -> None:
    """A few bytes of `&a [*b, *b, ...]` could otherwise expand into billions of values."""
    with pytest.raises(RecipeError, match="aliases"):
        load_recipe(DEFAULT_RECIPE, {"benchmark.batch_sizes": "[&one 1, *one]"})


def test_a_set_error_names_the_override_not_a_file_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refused(capsys, "validate", str(DEFAULT_RECIPE), "--set", "train.epochs=true")
    assert line == (
        f"error: {DEFAULT_RECIPE}: train.epochs: Input should be a valid integer (got true)"
    )


@pytest.mark.parametrize(
    "key", ["variants.int8-static.per_channel", 'variants."int8-static".per_channel']
)
def test_set_reaches_hyphenated_keys(key: str) -> None:
    recipe = load_recipe(DEFAULT_RECIPE, {key: "false"})
    assert recipe.variants.int8_static.per_channel is False
    assert load_recipe(DEFAULT_RECIPE).variants.int8_static.per_channel is True


def test_a_malformed_set_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "validate", str(DEFAULT_RECIPE), "--set", "train..epochs=3")
    assert "expected a dotted key" in line


def test_partial_tolerance_overrides_merge_with_the_defaults(tmp_path: Path) -> None:
    default = VARIANTS["int8-dynamic"].default_tolerance
    from_file = write_recipe(
        tmp_path, {"parity.tolerances": {"int8-dynamic": {"min_top1_agreement": 0.99}}}
    )
    from_set = {"parity.tolerances.int8-dynamic": "{min_top1_agreement: 0.99}"}
    for recipe in (load_recipe(from_file), load_recipe(DEFAULT_RECIPE, from_set)):
        merged = recipe.tolerance("int8-dynamic")
        assert merged.min_top1_agreement == 0.99 != default.min_top1_agreement
        assert (merged.atol, merged.mean_atol, merged.scale) == (
            default.atol,
            default.mean_atol,
            default.scale,
        )
    assert main(["validate", str(from_file)]) == 0


# --- data ------------------------------------------------------------------------------------


def _table_recipe(folder: Path, kind: str, table: Any) -> Path:
    path = folder / f"data.{kind}"
    table.to_csv(path, index=False) if kind == "csv" else table.to_parquet(path)
    dataset = {
        "source": kind,
        "path": path.name,
        "features": [c for c in table.columns if c != "digit"],
        "label": "digit",
        "sample_shape": [1, 8, 8],
        "scale": 16.0,
    }
    return write_recipe(folder, {"dataset": dataset})


def _digits_table() -> Any:
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    table["digit"] = digits.target.astype(np.float64)
    return table


@pytest.mark.parametrize(
    ("kind", "column", "value", "expected"),
    [
        ("csv", "p17", np.nan, "dataset.features: {file} column 'p17' has NaN at sample 5"),
        ("parquet", "p3", np.inf, "dataset.features: {file} column 'p3' has an infinite value"),
        ("csv", "digit", np.nan, "dataset.label: {file} column 'digit' has a NaN or infinite"),
        ("parquet", "digit", 2.5, "dataset.label: {file} column 'digit' has a fractional label"),
        ("csv", "digit", -1, "dataset.label: {file} column 'digit' has a negative label (-1.0)"),
    ],
)
def test_bad_values_in_table_files(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    column: str,
    value: float,
    expected: str,
) -> None:
    table = _digits_table()
    table.loc[5, column] = value
    path = _table_recipe(tmp_path, kind, table)
    line = refused(capsys, "validate", str(path))
    field = expected.split(":")[0].split(".")[-1]
    assert line.startswith(
        f"error: {at(path, field + ':')}: " + expected.format(file=tmp_path / f"data.{kind}")
    )


def test_a_text_column_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _digits_table()
    table["p9"] = table["p9"].astype(str)
    table.loc[0, "p9"] = "dark"
    path = _table_recipe(tmp_path, "csv", table)
    line = refused(capsys, "validate", str(path))
    assert f"dataset.features: {tmp_path / 'data.csv'} column 'p9' holds " in line
    assert line.endswith(" values; expected numbers")


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": "nan", "y": "ok"}, "dataset.features: {file} array 'x' has NaN at sample 3"),
        ({"x": "ok", "y": "negative"}, "dataset.labels: {file} array 'y' has a negative label"),
        ({"x": "ok", "y": "fraction"}, "dataset.labels: {file} array 'y' has a fractional label"),
    ],
)
def test_bad_values_in_npz_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arrays: dict[str, str], expected: str
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.reshape(-1, 1, 8, 8).astype(np.float32)
    y = digits.target.astype(np.float64)
    if arrays["x"] == "nan":
        x[3, 0, 2, 2] = np.nan
    if arrays["y"] == "negative":
        y[7] = -1
    if arrays["y"] == "fraction":
        y[7] = 0.5
    np.savez(tmp_path / "data.npz", x=x, y=y)
    path = write_recipe(tmp_path, {"dataset": {"source": "npz", "path": "data.npz", "scale": 16.0}})
    line = refused(capsys, "validate", str(path))
    # the recipe leaves features and labels at their defaults: the line is the dataset's
    assert line.startswith(
        f"error: {at(path, 'dataset:')}: " + expected.format(file=tmp_path / "data.npz")
    )


def test_infinite_values_from_scaling_a_shipped_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sklearn data has no NaN, but a scale that overflows float32 makes infinities."""
    path = write_recipe(tmp_path, {"dataset.scale": 1e-40})
    line = refused(capsys, "validate", str(path))
    assert "dataset.features: scikit-learn dataset 'digits' has an infinite value" in line


def test_infinite_synthetic_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = {
        "source": "synthetic",
        "inputs": [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float16"}],
    }
    dataset["inputs"][0]["high"] = 1e6  # float16 holds at most 65504
    (tmp_path / "weights.pt").write_bytes(b"never read: the data is refused first")
    change = {"dataset": dataset, "train.enabled": False, "model.checkpoint": "weights.pt"}
    path = write_recipe(tmp_path, change)
    line = refused(capsys, "validate", str(path))
    assert "dataset.inputs: synthetic input 'input' (check its low/high and dtype) has an " in line


FEW_CLASSES = textwrap.dedent("""
    from torch import nn


    def net(outputs: int = 3):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, outputs))
""")


def test_labels_beyond_the_models_class_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "few_classes.py").write_text(FEW_CLASSES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "few_classes")
    path = write_recipe(tmp_path, {"model.architecture": "few_classes:net", "model.kwargs": {}})
    line = refused(capsys, "validate", str(path))
    sys.modules.pop("few_classes", None)
    assert line == (
        f"error: {at(path, 'dataset:')}: dataset: labels go up to 9, but model 'few_classes:net' "
        "outputs 3 class scores per sample; expected labels 0..2"
    )


def test_a_single_value_head_is_not_held_to_the_class_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    (tmp_path / "few_classes.py").write_text(FEW_CLASSES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "few_classes")
    sys.path.insert(0, str(tmp_path))
    try:
        import few_classes

        torch.save(few_classes.net(outputs=1).state_dict(), tmp_path / "one.pt")
    finally:
        sys.path.remove(str(tmp_path))
    change = {
        "model.architecture": "few_classes:net",
        "model.kwargs": {"outputs": 1},
        "model.checkpoint": "one.pt",
        "train.enabled": False,
    }
    assert load_and_check(str(write_recipe(tmp_path, change))).model.kwargs == {"outputs": 1}
    sys.modules.pop("few_classes", None)


# --- the machine -----------------------------------------------------------------------------


def test_an_objective_provider_this_build_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build runs CUDA: the objective is valid here")
    path = write_recipe(tmp_path, {"register.objective.provider": "CUDAExecutionProvider"})
    line = refused(capsys, "validate", str(path))
    assert line.startswith(
        f"error: {at(path, 'provider: CUDA')}: register.objective.provider: CUDAExecutionProvider "
        "is not in this onnxruntime "
    )
    assert "(it offers " in line and "CPUExecutionProvider" in line
    # the same provider among benchmark.providers only is allowed: it becomes a skipped row
    assert main(["validate", str(write_recipe(tmp_path, {}))]) == 0


def test_an_unwritable_home_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("ONNXFORGE_HOME", str(a_file / "state"))
    line = refused(capsys, "validate", str(DEFAULT_RECIPE))
    assert line == (
        f"error: ONNXFORGE_HOME: {a_file / 'state'}: {a_file} is not a folder; point "
        "ONNXFORGE_HOME at a writable folder"
    )
    if os.geteuid() == 0:  # root may write to any folder: ask as an unprivileged user
        with tempfile.TemporaryDirectory() as shared:
            folder = Path(shared).resolve()
            folder.chmod(0o755)  # reachable by that user
            locked = folder / "locked"
            locked.mkdir(mode=0o555)
            recipe = folder / "recipe.yaml"  # the checkout may sit in a 0700 home (/root)
            shutil.copy(DEFAULT_RECIPE, recipe)
            recipe.chmod(0o644)
            line = refused_unprivileged(locked / "state", "validate", str(recipe))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("ONNXFORGE_HOME", str(locked / "state"))
        line = refused(capsys, "validate", str(DEFAULT_RECIPE))
    assert line == (
        f"error: ONNXFORGE_HOME: {locked / 'state'} is not writable by this user ({locked} is "
        "read-only); point ONNXFORGE_HOME at a writable folder"
    )


# Imports everything `validate` loads before the home check while still root (the venv may be
# unreadable to `nobody`), then drops to `nobody` for good and runs the CLI.
UNPRIVILEGED = textwrap.dedent("""
    import os, pwd, sys

    import flows.cli, onnxforge.chatter, onnxforge.errors, onnxforge.overrides
    import onnxforge.preflight

    try:
        user = pwd.getpwnam("nobody")
        uid, gid = user.pw_uid, user.pw_gid
    except KeyError:
        uid = gid = 65534
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert os.getuid() == os.geteuid() == uid != 0
    sys.exit(flows.cli.main(sys.argv[1:]))
""")


def refused_unprivileged(home: Path, *argv: str) -> str:
    """As root: run the CLI as `nobody` with ONNXFORGE_HOME=`home`; it must exit 2 with exactly
    one line on stderr, which is returned."""
    environment = {**os.environ, "ONNXFORGE_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED, *argv],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- the preflight runs once per process -------------------------------------------------------

COUNTING = textwrap.dedent("""
    from pathlib import Path

    from torch import nn


    def net(log: str):
        with open(log, "a") as handle:
            handle.write("built\\n")
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
""")


def test_the_second_check_of_the_same_inputs_skips_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counting.py").write_text(COUNTING)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONNXFORGE_IMPORT_MODULES", "counting")
    log = tmp_path / "builds.log"
    path = write_recipe(
        tmp_path, {"model.architecture": "counting:net", "model.kwargs": {"log": str(log)}}
    )
    load_and_check(str(path), {"train.epochs": "3"})
    load_and_check(str(path), {"train.epochs": "3"})  # the flow's task after the CLI
    assert log.read_text().count("built") == 1
    load_and_check(str(path), {"train.epochs": "4"})  # other inputs: checked again
    assert log.read_text().count("built") == 2
    path.write_text(path.read_text() + "\n# edited\n")  # the file changed: checked again
    load_and_check(str(path), {"train.epochs": "4"})
    assert log.read_text().count("built") == 3
    with pytest.raises(RecipeError, match="train.epochs"):  # the schema is always checked
        load_and_check(str(path), {"train.epochs": "true"})
    sys.modules.pop("counting", None)
