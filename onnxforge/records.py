"""Small frozen records passed between stages: paths, hashes and numbers, never models."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """Base for stage records: immutable, JSON-serialisable, safe to persist as Prefect results."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelArtifact(Record):
    """One ONNX file and where it came from."""

    path: str
    sha256: str
    variant: str
    parent: str | None
    producer: str  # the tool (and version) that wrote it
    opset: int
    size_bytes: int


class VariantBuild(Record):
    """The outcome of making one variant: its artifact, or why there is none."""

    variant: str
    artifact: ModelArtifact | None
    reason: str = ""


class TrainResult(Record):
    """What training left behind."""

    checkpoint: str
    checkpoint_sha256: str
    dataset_hash: str
    epochs_run: int
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float


class ParityFailure(Record):
    """One broken clause of the parity contract."""

    # output_missing | shape_mismatch | non_finite | tolerance_exceeded | top1_below_floor |
    # accuracy_drop | not_run (the variant could not run where parity is measured)
    kind: str
    message: str


class OutputParity(Record):
    """Error numbers of one output."""

    name: str
    max_abs_err: float
    mean_abs_err: float
    rel_err: float  # max abs error / max |reference|


class LayerDrift(Record):
    """How far one intermediate tensor of a quantized model strays from its float parent."""

    tensor: str
    node: str
    sqnr_db: float  # signal-to-quantization-noise ratio; lower drifts more


class ParityResult(Record):
    """A variant measured against the source model on the test split."""

    variant: str
    passed: bool
    failures: tuple[ParityFailure, ...] = ()
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    source_accuracy: float | None = None
    per_output: tuple[OutputParity, ...] = ()
    drifting_layers: tuple[LayerDrift, ...] = ()  # filled for quantized variants that fail


class BenchResult(Record):
    """Latency of one (variant, provider, batch size); status ok | skipped | unsupported."""

    variant: str
    provider: str
    batch_size: int
    status: str
    reason: str = ""
    size_bytes: int | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    session_ms: float | None = None
    iterations: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None  # coefficient of variation: std / mean
    throughput: float | None = None  # items per second
    peak_rss_increase_mb: float | None = None
    speedup: float | None = None  # framework baseline p50 / this p50, same batch size


class Registration(Record):
    """What the register stage did."""

    model_name: str
    version: str | None
    variant: str | None
    model_id: str | None
    champion_moved: bool
    reason: str


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(final_path: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a temp file beside `final_path`, then rename it into place."""
    final_path.parent.mkdir(parents=True, exist_ok=True)
    # Keep every suffix (".weights.h5", not just ".h5"): some writers check the full one.
    suffixes = "".join(final_path.suffixes)
    stem = final_path.name[: len(final_path.name) - len(suffixes)]
    handle, temp_name = tempfile.mkstemp(dir=final_path.parent, prefix=f".{stem}.", suffix=suffixes)
    os.close(handle)
    try:
        write(Path(temp_name))
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600 files; these are shared artifacts
        os.replace(temp_name, final_path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return final_path


def describe_onnx(path: Path, variant: str, parent: str | None, producer: str) -> ModelArtifact:
    """Build the record of an ONNX file already on disk."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelArtifact(
        path=str(path),
        sha256=sha256_of(path),
        variant=variant,
        parent=parent,
        producer=producer,
        opset=opset,
        size_bytes=path.stat().st_size,
    )


def built_artifacts(builds: list[VariantBuild]) -> list[ModelArtifact]:
    """The artifacts of the variants that were made."""
    return [build.artifact for build in builds if build.artifact is not None]


def passing_artifacts(
    artifacts: list[ModelArtifact], parity: list[ParityResult]
) -> list[ModelArtifact]:
    """The artifacts whose parity passed: the only ones worth benchmarking or registering."""
    passed = {result.variant for result in parity if result.passed}
    return [artifact for artifact in artifacts if artifact.variant in passed]


def parent_for(variant: str, builds: list[VariantBuild]) -> ModelArtifact:
    """The artifact a variant is made from: its registered parent, or the nearest built ancestor."""
    from onnxforge.variants import buildable_from

    built = {b.variant: b.artifact for b in builds if b.artifact is not None}
    return built[buildable_from(variant, set(built))]
