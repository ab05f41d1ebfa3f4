"""Fixed batch dimensions: which batch an ONNX model accepts, running it in batches it accepts,
and the opt-in rewrite of a fixed dimension 0 into a symbolic `batch` when that is provably safe.

Model-zoo files often fix dimension 0 (batch 1). ONNX Runtime refuses any other batch with
"Got invalid dimensions for input ... index: 0 Got: 2 Expected: 1", so every stage feeds such a
model exactly the batch it declares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxforge.inputs import Features, count, named, take, tile

SYMBOLIC_BATCH = "batch"


def session_batch(session: Any) -> int | None:
    """The fixed batch every input of an ORT session declares, or None when dim 0 is free."""
    fixed = {i.shape[0] for i in session.get_inputs() if i.shape and isinstance(i.shape[0], int)}
    return fixed.pop() if len(fixed) == 1 else None


def refused_batch(session: Any, batch_size: int) -> str | None:
    """Why the session cannot run `batch_size` samples at once (None when it can)."""
    fixed = session_batch(session)
    if fixed is None or fixed == batch_size:
        return None
    return (
        f"the model's inputs fix the batch at {fixed} (dimension 0); "
        f"export.make_batch_dynamic: true makes it dynamic when that is safe"
    )


def run_accepted(session: Any, features: Features, batch_size: int = 256) -> list[np.ndarray]:
    """Run `session` over `features` in chunks of the batch it accepts; one array per output.

    With a fixed batch B the last chunk is padded with repeated samples and the padding is cut
    from every output whose dimension 0 is that batch.
    """
    from onnxforge.runtime import input_names

    names = input_names(session)
    fixed = session_batch(session)
    step = fixed or batch_size
    total = count(features)
    chunks: list[list[np.ndarray]] = []
    per_sample: list[bool] | None = None  # which outputs have one row per sample
    for start in range(0, total, step):
        chunk = take(features, slice(start, start + step))
        real = count(chunk)
        fed = real if fixed is None else fixed
        if fixed is not None and real < fixed:
            chunk = tile(chunk, fixed)  # repeats the real samples up to the declared batch
        outputs = session.run(None, named(chunk, names))
        rows = [bool(o.ndim) and len(o) == fed for o in outputs]
        per_sample = (
            rows if per_sample is None else [a and b for a, b in zip(per_sample, rows, strict=True)]
        )
        chunks.append([o[:real] if row else o for o, row in zip(outputs, rows, strict=True)])
    # An output without a row per sample (a scalar, a fixed table) is the same for every chunk.
    return [
        np.concatenate([chunk[i] for chunk in chunks]) if per_sample[i] else chunks[0][i]
        for i in range(len(chunks[0]))
    ]


def fixed_batch(model: Any) -> int | None:
    """The fixed dimension 0 of an ONNX ModelProto's graph inputs, or None when it is free.

    The same rule as session_batch (what ONNX Runtime enforces): the one value that the inputs
    with a fixed dimension 0 declare."""
    fixed = set()
    initializers = {init.name for init in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        shape = graph_input.type.tensor_type.shape.dim
        if shape and shape[0].HasField("dim_value") and shape[0].dim_value > 0:
            fixed.add(shape[0].dim_value)
    return fixed.pop() if len(fixed) == 1 else None


def file_batch(path: str) -> int | None:
    """fixed_batch() of an ONNX file (its weights are not read)."""
    import onnx

    return fixed_batch(onnx.load(path, load_external_data=False))


def make_batch_dynamic(model: Any) -> Any:
    """A copy of `model` whose inputs and outputs have a symbolic dimension 0 (`batch`).

    Raises ValueError naming the node when the rewrite is not provably safe (see batch_safety).
    """
    import onnx

    from onnxforge.batch_safety import unsafe_reason

    batch = fixed_batch(model)
    if batch is None:
        raise ValueError("the model's inputs do not share one fixed dimension 0")
    reason = unsafe_reason(model, batch)
    if reason is not None:
        raise ValueError(reason)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    initializers = {init.name for init in rewritten.graph.initializer}
    for value in [*rewritten.graph.input, *rewritten.graph.output]:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_param = SYMBOLIC_BATCH
    del rewritten.graph.value_info[:]  # inferred shapes of the fixed batch: inferred again
    return onnx.shape_inference.infer_shapes(rewritten)


def check_rewrite(original: str, rewritten: str, samples: Features) -> None:
    """Raise ValueError unless the rewritten file gives the original's outputs on real samples,
    run at a batch the original could not take."""
    from onnxforge.runtime import make_session

    before = make_session(original, "CPUExecutionProvider")
    batch = session_batch(before) or 1
    probe = tile(samples, 2 * batch + 1)  # a batch size the fixed model does not accept
    expected = run_accepted(before, probe)
    try:
        after = make_session(rewritten, "CPUExecutionProvider")
        got = after.run(None, named(probe, [i.name for i in after.get_inputs()]))
    except Exception as error:  # ORT's Fail/InvalidArgument derive from Exception only
        message = " ".join(str(error).split())
        raise ValueError(
            f"the rewritten model does not run at batch {2 * batch + 1}: {message}"
        ) from None
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want.shape != have.shape:
            raise ValueError(
                f"output {index} has shape {have.shape} at batch {2 * batch + 1}; "
                f"expected {want.shape}"
            )
        if want.dtype.kind == "f":
            scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
            error = float(np.max(np.abs(want - have))) if want.size else 0.0
            if error > 1e-4 * scale:
                raise ValueError(f"output {index} differs from the original by {error:.3g}")
        elif not np.array_equal(want, have):
            raise ValueError(f"output {index} differs from the original")
