"""The parity contract refuses garbage: constant outputs, ties, all-zero int8 outputs; tolerances
in spreads or absolute; regression outputs scored by error; partial tolerance overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.batching import run_accepted
from onnxforge.datasets import Splits, load_splits
from onnxforge.errors import RecipeError
from onnxforge.onnx_files import describe_onnx
from onnxforge.parity import ParityBar, check_variant, compare_outputs
from onnxforge.recipe import Recipe, load_recipe
from onnxforge.runtime import make_session
from onnxforge.scoring import agreement, top1
from onnxforge.training import _accuracy
from onnxforge.variants import VARIANTS, Tolerance
from tests.conftest import DEFAULT_RECIPE

LOOSE = Tolerance(atol=1e9, mean_atol=1e9, min_top1_agreement=0.0)
# the int8-static default before this contract: absolute bounds, ties counted as agreement
OLD_INT8_STATIC = Tolerance(atol=4.0, mean_atol=1.0, min_top1_agreement=0.97, scale="absolute")


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    return load_recipe(DEFAULT_RECIPE)


@pytest.fixture(scope="module")
def splits(recipe: Recipe) -> Splits:
    return load_splits(recipe.dataset)


def linear_model(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """A real ONNX graph: logits = flatten(input) @ weight + bias, dynamic batch."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "weight"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def real_reference(tmp_path: Path, splits: Splits) -> list[np.ndarray]:
    """Outputs that depend on the input: a random linear model, run on ORT."""
    weight = np.random.default_rng(0).normal(size=(64, 10))
    path = linear_model(tmp_path / "reference.onnx", weight, np.zeros(10))
    return run_accepted(make_session(str(path), "CPUExecutionProvider"), splits.x_test)


@pytest.mark.parametrize("bias", [np.full(10, 0.1), np.eye(10)[3]], ids=["uniform", "class3"])
def test_a_model_that_ignores_its_input_fails_as_degenerate(
    recipe: Recipe, splits: Splits, tmp_path: Path, bias: np.ndarray
) -> None:
    path = linear_model(tmp_path / "constant.onnx", np.zeros((64, 10)), bias)
    artifact = describe_onnx(path, "fp32", None, "onnx.helper")
    reference = real_reference(tmp_path, splits)
    result = check_variant(recipe, artifact, splits.x_test, splits.y_test, reference)
    degenerate = [f for f in result.failures if f.kind == "degenerate_output"]
    assert not result.passed and degenerate, result.failures
    assert degenerate[0].message.startswith("logits: the same value for all 360 test samples")


def test_a_constant_source_and_variant_never_agree() -> None:
    """A random network that says 0.1 for every class used to be 100% top-1 agreement."""
    uniform = np.full((50, 10), 0.1, np.float32)
    labels = np.arange(50) % 10
    result = compare_outputs("fp32", [uniform], [uniform.copy()], labels, ParityBar(LOOSE, 0.01))
    assert result.top1_agreement == 0.0 and result.accuracy == 0.0
    assert {"degenerate_output"} <= {f.kind for f in result.failures}
    single = compare_outputs(
        "fp32", [uniform[:1]], [uniform[:1].copy()], None, ParityBar(LOOSE, 0.01)
    )
    assert "degenerate_output" not in {f.kind for f in single.failures}, "needs >= 2 samples"


def test_ties_are_neither_agreement_nor_accuracy() -> None:
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, 3.0], [np.nan, 0.0, 1.0]])
    assert top1(scores).tolist() == [-1, 1, -1, -1]
    # a source tie has no answer to agree with: only the one decided sample counts
    assert agreement(scores, scores) == 1.0
    assert agreement(np.array([[0.0, 2.0, 1.0]]), np.array([[1.0, 1.0, 0.0]])) == 0.0
    assert agreement(np.zeros((3, 4)), np.zeros((3, 4))) == 0.0  # nothing decided
    assert _accuracy(scores, np.array([0, 1, 0, 0])) == 0.25
    tied_variant = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 2.0]])
    reference = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 1.0]])
    result = compare_outputs(
        "int8-static", [reference], [tied_variant], None, ParityBar(LOOSE, 0.01)
    )
    assert result.top1_agreement == 0.5


def softmax_probabilities(labels: np.ndarray) -> np.ndarray:
    """Confident, mostly right class probabilities, like a trained classifier's softmax."""
    logits = np.random.default_rng(1).normal(size=(len(labels), 10))
    logits[np.arange(len(labels)), labels] += 6.0
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def test_an_all_zero_output_on_probabilities_fails_and_passed_the_old_bounds(
    splits: Splits,
) -> None:
    probabilities = softmax_probabilities(splits.y_test)
    zeros = np.zeros_like(probabilities)
    default = VARIANTS["int8-static"].default_tolerance
    result = compare_outputs(
        "int8-static", [probabilities], [zeros], splits.y_test, ParityBar(default, 0.01)
    )
    kinds = {f.kind for f in result.failures}
    assert {"degenerate_output", "tolerance_exceeded", "top1_below_floor"} <= kinds
    assert any("x spread > atol" in f.message for f in result.failures)
    old = compare_outputs(
        "int8-static", [probabilities], [zeros], splits.y_test, ParityBar(OLD_INT8_STATIC, 0.01)
    )
    assert "tolerance_exceeded" not in {f.kind for f in old.failures}, "the old bounds let it by"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_every_default_tolerance_refuses_an_all_zero_output(variant: str, kind: str) -> None:
    labels = np.arange(300) % 10
    reference = softmax_probabilities(labels)
    if kind == "logits":
        reference = np.log(reference) - np.log(reference).mean(axis=1, keepdims=True)
    tolerance = VARIANTS[variant].default_tolerance
    result = compare_outputs(
        variant, [reference], [np.zeros_like(reference)], None, ParityBar(tolerance, 0)
    )
    assert "tolerance_exceeded" in {f.kind for f in result.failures}


def test_tolerances_are_read_in_spreads_or_absolute() -> None:
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(100, 10)) * 10).astype(np.float32)  # spread ~10
    nudged = logits.copy()
    nudged[0, 0] += 0.5
    spread_form = Tolerance(atol=0.1, mean_atol=0.1, min_top1_agreement=0)
    absolute_form = spread_form.model_copy(update={"scale": "absolute"})
    assert compare_outputs(
        "x", [logits], [nudged], None, ParityBar(spread_form, 0), ["logits"]
    ).passed
    strict = compare_outputs("x", [logits], [nudged], None, ParityBar(absolute_form, 0), ["logits"])
    assert [f.message for f in strict.failures] == [
        "logits: max abs error 0.5 > atol 0.1 (absolute)"
    ]
    probabilities = logits / 100  # spread ~0.1: the same error is now five times the atol
    loose = compare_outputs(
        "x", [probabilities], [probabilities + 0.05], None, ParityBar(absolute_form, 0)
    )
    assert loose.passed
    failed = compare_outputs(
        "x", [probabilities], [probabilities + 0.05], None, ParityBar(spread_form, 0)
    )
    (output,) = failed.per_output
    assert output.spread == pytest.approx(float(probabilities.astype(np.float64).std()))
    assert output.max_spread_err == pytest.approx(0.05 / output.spread, rel=1e-3)
    assert failed.failures[0].message.startswith(
        f"output0: max abs error 0.05 = {output.max_spread_err:.3g} x spread > atol 0.1 x spread"
    )


@pytest.mark.parametrize("shape", [(200,), (200, 1)])
def test_regression_outputs_get_mae_and_rmse_not_top1(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    labels = rng.normal(size=200) * 3
    reference = (labels + rng.normal(size=200) * 0.5).reshape(shape).astype(np.float32)
    close = reference + np.float32(0.001)
    result = compare_outputs("fp16", [reference], [close], labels, ParityBar(LOOSE, 0.01))
    assert result.passed, result.failures
    assert result.top1_agreement is None and result.accuracy is None
    assert result.source_rmse == pytest.approx(0.5, rel=0.15)
    assert result.rmse == pytest.approx(result.source_rmse, rel=0.01) and result.mae > 0
    worse = reference + rng.normal(size=shape).astype(np.float32)
    failed = compare_outputs("fp16", [reference], [worse], labels, ParityBar(LOOSE, 0.01))
    (failure,) = failed.failures
    assert failure.kind == "accuracy_drop" and failure.message.startswith("RMSE ")
    assert failed.rmse > failed.source_rmse * 1.01
    class_ids = compare_outputs(
        "fp16", [reference], [close], labels.astype(np.int64), ParityBar(LOOSE, 0)
    )
    assert class_ids.rmse is None and class_ids.top1_agreement is None


def test_a_partial_tolerance_override_merges_with_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = load_recipe(
        DEFAULT_RECIPE, {"parity.tolerances": "{int8-dynamic: {min_top1_agreement: 0.99}}"}
    )
    default = VARIANTS["int8-dynamic"].default_tolerance
    merged = recipe.tolerance("int8-dynamic")
    assert (
        merged.min_top1_agreement == 0.99
        and merged.min_top1_agreement != default.min_top1_agreement
    )
    assert (merged.atol, merged.mean_atol, merged.scale) == (
        default.atol,
        default.mean_atol,
        "spread",
    )
    assert recipe.tolerance("int8-static") == VARIANTS["int8-static"].default_tolerance
    monkeypatch.setenv("ONNXFORGE_TRUSTED_BAR", "1")  # the scale is the recipe's unless opted in
    absolute = load_recipe(
        DEFAULT_RECIPE, {"parity.tolerances": "{int8-static: {scale: absolute, atol: 0.5}}"}
    ).tolerance("int8-static")
    assert (absolute.scale, absolute.atol) == ("absolute", 0.5)


@pytest.mark.parametrize(
    ("tolerances", "expected"),
    [
        (
            "{int8-dynamic: {atl: 0.9}}",
            "parity.tolerances.int8-dynamic.atl: unknown key; expected one of atol, mean_atol, "
            "rtol, min_top1_agreement, scale",
        ),
        ("{int8-dynamic: {atol: -1}}", "parity.tolerances.int8-dynamic.atol: "),
        ("{int8-dynamic: {scale: relative}}", "parity.tolerances.int8-dynamic.scale: "),
    ],
)
def test_a_bad_tolerance_field_is_refused_by_name(tolerances: str, expected: str) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe(DEFAULT_RECIPE, {"parity.tolerances": tolerances})
    assert f"{DEFAULT_RECIPE}: {expected}" in str(error.value)
