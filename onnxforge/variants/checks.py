"""Build-time checks of a variant file: ONNX's full checker, a CPU session, one inference.

A file that fails any of them is never reported as built: the build records the tool's message
instead (an int8-static per-channel file from an opset-9 model was once reported as built, then
refused by ONNX Runtime at parity: `Unrecognized attribute: axis for operator DequantizeLinear`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.inputs import Features, count, named, take, tile

CPU = "CPUExecutionProvider"
_DEFAULT_CHECK_BATCH = (
    2  # a symbolic batch dimension is fed 2 samples (1 could hide a bug in dim 0)
)
_NUMPY_TYPES = {"tensor(float16)": np.float16, "tensor(double)": np.float64}


class BuildCheckFailed(Exception):
    """A build-time check refused the file; `check` names it, the message is the tool's."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def tool_message(error: BaseException, temp: Path, final_name: str) -> str:
    """The tool's whole message on one line, naming the final file instead of the temp one."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text.replace(str(temp), final_name).replace(temp.name, final_name)[:2000]


def check_batch(model: Any) -> int:
    """The batch the model accepts: its fixed dimension 0 (as ONNX Runtime reads it), or 2."""
    from onnxforge.batching import fixed_batch

    return fixed_batch(model) or _DEFAULT_CHECK_BATCH


def sample_feed(session: Any, features: Features, batch: int) -> dict[str, np.ndarray]:
    """`batch` real samples named for the session, cast to its float input types (fp16 graphs)."""
    batch_features = (
        tile(features, batch) if count(features) < batch else take(features, slice(0, batch))
    )
    feed = named(batch_features, [i.name for i in session.get_inputs()])
    for graph_input in session.get_inputs():
        wanted = _NUMPY_TYPES.get(graph_input.type)
        if wanted is not None and np.issubdtype(feed[graph_input.name].dtype, np.floating):
            feed[graph_input.name] = feed[graph_input.name].astype(wanted)
    return feed


def check_built(path: Path, final_name: str, device: str, features: Features) -> str:
    """Full-check `path`, open it on ONNX Runtime's CPU provider and run it once on real samples;
    returns what was checked, raises BuildCheckFailed with the tool's message. A GPU variant
    (no CPU kernels promised) is only checked as far as the CPU provider can load and run it."""
    import onnx
    import onnxruntime as ort

    try:
        # The path form: it reads external data and handles models over protobuf's 2 GB limit.
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # noqa: BLE001 - ValidationError, InferenceError, protobuf errors
        raise BuildCheckFailed(
            "onnx.checker (full_check)", tool_message(error, path, final_name)
        ) from None
    done = ["onnx.checker full_check passed"]
    model = onnx.load(str(path), load_external_data=False)
    batch = check_batch(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=[CPU])
    except Exception as error:  # noqa: BLE001 - ORT's errors (InvalidGraph, Fail, ...) derive from Exception
        message = tool_message(error, path, final_name)
        if device == "gpu":
            return "; ".join(
                [*done, f"{CPU} cannot load it (a GPU variant; not run here): {message}"]
            )
        raise BuildCheckFailed(f"{CPU} session", message) from None
    done.append(f"{CPU} session loaded")
    feed = sample_feed(session, features, batch)
    try:
        session.run(None, feed)
    except Exception as error:  # noqa: BLE001 - ORT's errors derive from Exception
        message = tool_message(error, path, final_name)
        if device == "gpu":
            return "; ".join([*done, f"inference on {CPU} failed (a GPU variant): {message}"])
        raise BuildCheckFailed(f"inference on {batch} samples ({CPU})", message) from None
    done.append(f"inference on {batch} samples of the run's data ran")
    return "; ".join(done)
