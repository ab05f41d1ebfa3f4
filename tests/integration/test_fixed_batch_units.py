"""Fixed-batch ONNX files: run in the batch they accept, export.make_batch_dynamic (a safe graph
is rewritten and matches the original; an unsafe one is refused naming the field), the preflight
keeps ORT's whole message, and the drift report ignores tensors identical in both models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from onnxforge.errors import RecipeError
from tests.conftest import DEFAULT_RECIPE


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.fixed_batch_fixtures import fixed_batch_cnn

    folder = tmp_path_factory.mktemp("fixed-batch")
    return {
        "safe": fixed_batch_cnn(folder),
        "unsafe": fixed_batch_cnn(folder, hardcoded_reshape=True),
    }


def _digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data[:n] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)


def _recipe(folder: Path, model_file: Path, **export: object) -> Path:
    data = yaml.safe_load(DEFAULT_RECIPE.read_text())
    data["model"] = {"framework": "onnx", "file": str(model_file)}
    data["train"] = {"enabled": False}
    data["export"] = dict(export)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_fixed_batch_model_runs_in_the_batch_it_accepts(models: dict[str, Path]) -> None:
    from onnxforge.batching import refused_batch, run_accepted, session_batch
    from onnxforge.runtime import make_session

    session = make_session(str(models["safe"]), "CPUExecutionProvider")
    assert session_batch(session) == 1
    samples = _digits(5)
    together = run_accepted(session, samples)[0]
    one_by_one = np.concatenate(
        [session.run(None, {"input": samples[i : i + 1]})[0] for i in range(5)]
    )
    assert together.shape == (5, 10)
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=0)
    assert refused_batch(session, 1) is None
    assert "fix the batch at 1" in refused_batch(session, 16)


def test_make_batch_dynamic_rewrites_a_safe_model_that_matches_the_original(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from onnxforge.adapters.onnx_file import OnnxAdapter, OnnxSource
    from onnxforge.recipe import ExportSpec
    from onnxforge.runtime import make_session

    out = tmp_path / "fp32.onnx"
    producer = OnnxAdapter().export(
        OnnxSource(str(models["safe"])), _digits(4), ExportSpec(make_batch_dynamic=True), out
    )
    assert "fixed batch 1 made dynamic" in producer
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    samples = _digits(7)
    rewritten = make_session(str(out), "CPUExecutionProvider").run(None, {"input": samples})[0]
    original = make_session(str(models["safe"]), "CPUExecutionProvider")
    expected = np.concatenate([original.run(None, {"input": s[None]})[0] for s in samples])
    np.testing.assert_allclose(rewritten, expected, atol=1e-4)


def test_make_batch_dynamic_refuses_a_graph_that_hardcodes_the_batch(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from onnxforge.batching import make_batch_dynamic
    from onnxforge.preflight import load_and_check

    with pytest.raises(ValueError, match=r"Reshape.*hardcodes dimension 0"):
        make_batch_dynamic(onnx.load(str(models["unsafe"])))
    recipe = _recipe(tmp_path, models["unsafe"], make_batch_dynamic=True)
    with pytest.raises(RecipeError) as refused:
        load_and_check(str(recipe))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{recipe}:") and "export.make_batch_dynamic: cannot make" in message
    assert "set it to false" in message


def test_make_batch_dynamic_is_for_onnx_files_and_strictly_a_boolean(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from onnxforge.recipe import load_recipe

    with pytest.raises(RecipeError, match=r"export\.make_batch_dynamic: .*framework: onnx"):
        load_recipe(DEFAULT_RECIPE, {"export.make_batch_dynamic": "true"})
    recipe = _recipe(tmp_path, models["safe"], make_batch_dynamic="yes")
    with pytest.raises(
        RecipeError, match=r"export\.make_batch_dynamic: Input should be a valid boolean"
    ):
        load_recipe(recipe)


def test_a_fixed_batch_file_passes_the_preflight_and_logs_its_own_opset(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from onnxforge.preflight import load_and_check

    recipe = load_and_check(str(_recipe(tmp_path, models["safe"])))
    assert recipe.export.opset == 18  # the recipe default ...
    assert recipe.flat_params()["export.opset"] == "13"  # ... is not what the file declares


def test_the_preflight_error_carries_the_whole_ort_message(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from onnxforge.preflight import load_and_check

    recipe = _recipe(tmp_path, models["safe"])
    with pytest.raises(RecipeError) as refused:
        load_and_check(str(recipe), {"dataset.sample_shape": "[1, 4, 16]"})
    message = str(refused.value)
    assert "\n" not in message
    assert "index: 2 Got: 4 Expected: 8" in message and "index: 3 Got: 16 Expected: 8" in message


def test_drift_ranking_ignores_tensors_identical_in_both_models() -> None:
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_signal_to_quantization_noice_ratio as sqnr,
    )

    from onnxforge.drift import rank_layers

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(8, 16)).astype(np.float32)
    pairs = {
        "mask": ([np.zeros((8, 4), np.float32)], [np.zeros((8, 4), np.float32)]),
        "copied": ([signal], [signal.copy()]),
        "noisy": ([signal], [signal + rng.normal(scale=0.3, size=signal.shape)]),
        "slightly": ([signal], [signal + rng.normal(scale=0.01, size=signal.shape)]),
    }
    producers = {name: f"node_{name}" for name in pairs}
    ranked = rank_layers(pairs, producers, sqnr)
    assert [layer.tensor for layer in ranked] == ["noisy", "slightly"]
    assert ranked[0].node == "node_noisy" and ranked[0].sqnr_db < ranked[1].sqnr_db


def test_an_objective_at_a_batch_the_file_refuses_is_refused_before_any_work(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxforge.preflight import load_and_check

    monkeypatch.setenv("ONNXFORGE_TRUSTED_BAR", "1")  # the objective is the recipe's otherwise

    recipe = _recipe(tmp_path, models["safe"])
    at_four = {"benchmark.batch_sizes": "[1, 4]", "register.objective.batch_size": "4"}
    with pytest.raises(
        RecipeError, match=r"register\.objective\.batch_size: .* fixes its batch at 1"
    ):
        load_and_check(str(recipe), at_four)
    # the rewrite makes batch 4 measurable, so the same objective is accepted with it
    load_and_check(str(recipe), {**at_four, "export.make_batch_dynamic": "true"})


def test_outputs_without_a_row_per_sample_are_kept_once(tmp_path) -> None:
    """A fixed-batch model run in chunks: per-sample outputs are joined, a scalar is not."""
    import onnx
    from onnx import TensorProto, helper

    from onnxforge.batching import run_accepted
    from onnxforge.runtime import make_session

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["y"]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        ],
        "scalar-output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
        ],
    )
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    samples = np.arange(9, dtype=np.float32).reshape(3, 3)
    rows, total = run_accepted(make_session(str(path), "CPUExecutionProvider"), samples)
    np.testing.assert_array_equal(rows, samples)
    assert total.shape == () and float(total) == float(samples[0].sum())


@pytest.mark.parametrize(
    ("pads", "axes", "expected"),
    [
        ([1, 1, 1, 1], [2, 3], None),  # opset 18: pads name only the spatial axes
        ([1, 0, 1, 0], [0, 3], "it pads dimension 0"),
        ([0, 0, 1, 1], None, "do not cover its 4 dimensions"),  # malformed: a reason, not a crash
    ],
)
def test_pad_is_read_with_its_axes(pads, axes, expected) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from onnxforge.batch_safety import unsafe_reason

    initializers = [numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads")]
    inputs = ["x", "pads"]
    if axes is not None:
        initializers.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
        inputs += ["", "axes"]
    graph = helper.make_graph(
        [helper.make_node("Pad", inputs, ["y"])],
        "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    reason = unsafe_reason(model, 1)
    assert reason == expected if expected is None else expected in reason
