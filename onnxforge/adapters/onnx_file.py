"""The ONNX adapter, for users who bring an .onnx file: no training, the chain starts at simplify.

The "source model" is the user's file run on ONNX Runtime's CPU provider: parity is measured
against it and it is the benchmark baseline. External data next to the file is folded into the
pipeline's own copy, so later stages never lose it (tools that copy the .onnx alone, such as
`quant_pre_process`, fail on a model whose `.onnx.data` stayed behind).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def check_onnx_file(path: Path) -> None:
    """Refuse a corrupt or truncated file, or external data that points outside its folder."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises several types on bad bytes
        raise ValueError(f"model.file: {path} is not a readable ONNX model: {error}") from None
    folder = path.parent.resolve()
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = (folder / ExternalDataInfo(tensor).location).resolve()
            if not location.is_relative_to(folder):
                raise ValueError(
                    f"model.file: {path}: tensor {tensor.name!r} keeps its data at {location}, "
                    f"outside the model's folder {folder}"
                )
            if not location.is_file():
                raise ValueError(f"model.file: {path}: external data file {location} is missing")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as error:  # noqa: BLE001
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"model.file: {path} fails the ONNX checker: {first}") from None


class OnnxSource:
    """A user's ONNX file and, once needed, a CPU session over it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads: int | None = None
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            from onnxforge.runtime import make_session

            self._session = make_session(self.path, "CPUExecutionProvider", self.threads)
        return self._session


class OnnxAdapter:
    """Framework adapter over an existing ONNX file."""

    name = "onnx"
    checkpoint_suffix = ".onnx"
    threads: int | None = None

    def seed(self, seed: int) -> None:
        """Nothing to seed: the model is fixed."""

    def check_source(self, model_spec: Any) -> None:
        """The file must parse, pass the checker, and keep its external data inside its folder."""
        check_onnx_file(Path(model_spec.file))

    def build(self, model_spec: Any, sample_shape: tuple[int, ...], num_classes: int) -> OnnxSource:
        """The user's file, as it is."""
        source = OnnxSource(str(model_spec.file))
        source.threads = self.threads
        return source

    def fit(self, model: Any, splits: Any, train_spec: Any, on_epoch: Callable[..., None]) -> None:
        """Never called: the recipe schema requires train.enabled: false for ONNX files."""
        raise NotImplementedError("an ONNX file cannot be trained; set train.enabled: false")

    def predict(self, model: OnnxSource, features: Any) -> list[np.ndarray]:
        """Every output of the user's file on ONNX Runtime's CPU provider."""
        from onnxforge.runtime import run_batched

        return run_batched(model.session, features)

    def save_checkpoint(self, model: OnnxSource, path: Path) -> None:
        """A self-contained copy (external data folded in) kept with the run."""
        import onnx

        onnx.save(onnx.load(model.path), str(path))

    def load_checkpoint(self, model: OnnxSource, path: Path) -> None:
        """Nothing to load: the reference stays the user's original file."""

    def export(
        self, model: OnnxSource, example: np.ndarray, export_spec: Any, out_path: Path
    ) -> str:
        """The user's file becomes the fp32 variant, external data folded in."""
        import onnx

        proto = onnx.load(model.path)
        onnx.save(proto, str(out_path))
        made_by = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown producer"
        return f"user ONNX file {model.path} ({made_by})"

    def set_threads(self, threads: int | None) -> None:
        """Intra-op threads of the reference session."""
        self.threads = threads

    def latency_callable(self, model: OnnxSource, batch: np.ndarray) -> Callable[[], Any]:
        """The user's file on ONNX Runtime's CPU provider."""
        from onnxforge.inputs import named
        from onnxforge.runtime import input_names

        feed = named(batch, input_names(model.session))
        return lambda: model.session.run(None, feed)


ADAPTER = OnnxAdapter()
