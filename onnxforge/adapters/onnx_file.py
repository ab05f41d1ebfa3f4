"""The ONNX adapter, for users who bring an .onnx file: no training, the chain starts at simplify.

The "source model" is the user's file run on ONNX Runtime's CPU provider: parity is measured
against it and it is the benchmark baseline. External data next to the file is folded into the
pipeline's own copy, so later stages never lose it (tools that copy the .onnx alone, such as
`quant_pre_process`, fail on a model whose `.onnx.data` stayed behind).

A file whose batch (dimension 0) is fixed, as model zoos often ship them, is run in batches of
that size; `export.make_batch_dynamic: true` rewrites it to a symbolic `batch` when that is
provably safe (onnxforge/batch_safety.py) and the rewrite gives the original's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from onnxforge.datasets import Splits
    from onnxforge.inputs import Features
    from onnxforge.recipe import ExportSpec, ModelSpec, Recipe, TrainSpec


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


def file_opset(path: Path) -> int:
    """The default-domain opset the file declares (what the run logs as export.opset)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def batch_dynamic_refusal(path: Path) -> str | None:
    """Why export.make_batch_dynamic cannot rewrite this file; None when it can (or has nothing
    to do: dimension 0 is already symbolic)."""
    import onnx

    from onnxforge.batch_safety import unsafe_reason
    from onnxforge.batching import fixed_batch

    proto = onnx.load(str(path), load_external_data=False)
    batch = fixed_batch(proto)
    if batch is None:
        return None
    reason = unsafe_reason(proto, batch)
    if reason is None:
        return None
    return f"cannot make the fixed batch of {batch} dynamic: {reason}; set it to false"


def batch_problem(recipe: Recipe) -> str | None:
    """'field: why' when the recipe asks what the file's fixed batch cannot give: a rewrite the
    graph does not allow, or an objective at a batch size the file does not accept."""
    from onnxforge.batching import file_batch

    path = Path(recipe.model.file)
    if recipe.export.make_batch_dynamic:
        refusal = batch_dynamic_refusal(path)
        return None if refusal is None else f"export.make_batch_dynamic: {refusal}"
    batch = file_batch(str(path))
    objective = recipe.registry.objective
    if batch is None or objective.metric == "size_bytes" or objective.batch_size == batch:
        return None
    return (
        f"register.objective.batch_size: {path.name} fixes its batch at {batch}, so only batch "
        f"{batch} is measured; expected {batch}, or set export.make_batch_dynamic: true"
    )


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
    baseline_name = "onnx-original"  # the file as brought, unrewritten, on ORT's CPU provider
    threads: int | None = None
    keeps_file_shapes = True  # a fixed dimension stays fixed: the export does not declare axes

    def seed(self, seed: int) -> None:
        """Nothing to seed: the model is fixed."""

    def check_source(self, model_spec: ModelSpec) -> None:
        """The file must parse, pass the checker, and keep its external data inside its folder."""
        check_onnx_file(Path(model_spec.file))

    def check_recipe(self, recipe: Recipe) -> None:
        """The file's fixed batch (model zoos often fix it) gives what the recipe asks: a
        rewrite the graph allows, an objective at the batch size the file accepts."""
        problem = batch_problem(recipe)
        if problem is not None:
            raise ValueError(problem)

    def declared_opset(self, model_spec: ModelSpec) -> int | None:
        """The opset the file declares: it is not exported at the recipe's export.opset."""
        return None if model_spec.file is None else file_opset(Path(model_spec.file))

    def build(
        self, model_spec: ModelSpec, sample_shape: tuple[int, ...], num_classes: int
    ) -> OnnxSource:
        """The user's file, as it is."""
        source = OnnxSource(str(model_spec.file))
        source.threads = self.threads
        return source

    def fit(
        self,
        model: Any,
        splits: Splits,
        train_spec: TrainSpec,
        on_epoch: Callable[[int, dict[str, float]], None],
    ) -> None:
        """Never called: the recipe schema requires train.enabled: false for ONNX files."""
        raise NotImplementedError("an ONNX file cannot be trained; set train.enabled: false")

    def predict(self, model: OnnxSource, features: Features) -> list[np.ndarray]:
        """Every output of the user's file on ONNX Runtime's CPU provider."""
        from onnxforge.batching import run_accepted

        return run_accepted(model.session, features)

    def save_checkpoint(self, model: OnnxSource, path: Path) -> None:
        """A self-contained copy (external data folded in) kept with the run."""
        import onnx

        onnx.save(onnx.load(model.path), str(path))

    def load_checkpoint(self, model: OnnxSource, path: Path) -> None:
        """Nothing to load: the reference stays the user's original file."""

    def export(
        self, model: OnnxSource, example: Features, export_spec: ExportSpec, out_path: Path
    ) -> str:
        """The user's file becomes the fp32 variant, external data folded in; with
        export.make_batch_dynamic its fixed batch becomes symbolic, checked against the original
        on `example` (RuntimeError when unsafe or when the outputs differ)."""
        import onnx

        from onnxforge.batching import check_rewrite, fixed_batch, make_batch_dynamic

        proto = onnx.load(model.path)
        made_by = f"{proto.producer_name} {proto.producer_version}".strip() or "unknown producer"
        producer = f"user ONNX file {model.path} ({made_by})"
        batch = fixed_batch(proto)
        if not export_spec.make_batch_dynamic or batch is None:
            onnx.save(proto, str(out_path))
            return producer
        try:
            onnx.save(make_batch_dynamic(proto), str(out_path))
            check_rewrite(model.path, str(out_path), example)
        except ValueError as error:
            raise RuntimeError(f"export.make_batch_dynamic: {error}") from None
        return f"{producer}, fixed batch {batch} made dynamic"

    def set_threads(self, threads: int | None) -> None:
        """Intra-op threads of the reference session."""
        self.threads = threads

    def latency_callable(self, model: OnnxSource, batch: Features) -> Callable[[], object]:
        """The user's file on ONNX Runtime's CPU provider."""
        from onnxforge.batching import refused_batch
        from onnxforge.inputs import count, named
        from onnxforge.runtime import input_names

        refusal = refused_batch(model.session, count(batch))
        if (
            refusal is not None
        ):  # a RuntimeError: the benchmark's worker reports the size unsupported
            raise RuntimeError(refusal)
        feed = named(batch, input_names(model.session))
        return lambda: model.session.run(None, feed)


ADAPTER = OnnxAdapter()
