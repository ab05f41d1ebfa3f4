"""ONNX files on disk: their sha256, their size with external data, their record, and atomic writes.

Helpers for the files stages write and read; the records themselves live in onnxforge.records.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from onnxforge.records import ModelArtifact


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


def describe_onnx(
    path: Path,
    variant: str,
    parent: str | None,
    producer: str,
    checks: str = "",
    notes: tuple[str, ...] = (),
) -> ModelArtifact:
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
        size_bytes=onnx_size_bytes(path, model),
        checks=checks,
        notes=notes,
    )


def external_data_files(path: str | Path, model: Any = None) -> list[Path]:
    """The files holding `path`'s external data (each once), from every tensor that names one:
    initializers and tensor attributes, subgraphs included."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    folder = Path(path).parent
    files: dict[Path, None] = {}
    for tensor in _all_tensors(model.graph):
        if uses_external_data(tensor):
            files[folder / ExternalDataInfo(tensor).location] = None
    return list(files)


def _all_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _all_tensors(subgraph)


def onnx_size_bytes(path: str | Path, model: Any = None) -> int:
    """The size of an ONNX model as deployed: the .onnx file plus its external-data files (a
    PyTorch dynamo export keeps its weights in `<file>.onnx.data`, so the .onnx alone can be
    100 KB of a 46 MB model). A missing data file counts 0; loading the model reports it."""
    total = Path(path).stat().st_size
    for data_file in external_data_files(path, model):
        total += data_file.stat().st_size if data_file.is_file() else 0
    return total
