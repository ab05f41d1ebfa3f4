"""simplified: onnxsim constant folding and dead-node removal, checked by onnxsim itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from onnxforge.variants import EXACT, VariantSettings, VariantSpec, register


class SimplifySettings(VariantSettings):
    """onnxsim settings; a model over `max_bytes` is not simplified (onnxsim's 2 GB protobuf limit)."""

    check_n: int = Field(3, ge=0)
    max_bytes: int = Field(2 * 1024**3 - 1, ge=1)


def make_simplified(
    parent: Path, settings: SimplifySettings, out_path: Path, samples: np.ndarray
) -> str:
    """Run onnxsim, checked on real samples; raises when it fails or its own check fails."""
    import onnx
    import onnxsim

    from onnxforge.batching import file_batch
    from onnxforge.chatter import prints_to_debug
    from onnxforge.inputs import named, tile
    from onnxforge.onnx_files import onnx_size_bytes
    from onnxforge.variants.quantization import graph_input_names

    size = onnx_size_bytes(parent)  # external data included: onnxsim holds it all in one protobuf
    if size > settings.max_bytes:
        raise RuntimeError(f"model is {size} bytes, over max_bytes={settings.max_bytes}")
    # Real samples, not onnxsim's random fill: random token ids would index past an embedding.
    # As many as the model takes: a file whose batch is fixed (model zoos fix it at 1) refuses 4.
    batch = file_batch(str(parent)) or 4
    feed = named(tile(samples, batch), graph_input_names(parent))
    with prints_to_debug("onnxsim"):
        simplified, check_ok = onnxsim.simplify(
            onnx.load(str(parent)),
            check_n=settings.check_n,
            test_input_shapes={name: list(array.shape) for name, array in feed.items()},
            input_data=feed,
        )
    if not check_ok:
        raise RuntimeError("onnxsim's own output check failed")
    onnx.save(simplified, str(out_path))
    return f"onnxsim {onnxsim.__version__} (check_n={settings.check_n})"


register(
    VariantSpec(
        "simplified",
        "fp32",
        SimplifySettings,
        make_simplified,
        EXACT,
        "any",
        "onnxsim constant folding",
    )
)
