"""ONNX Runtime sessions, created one way for parity and benchmark alike."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxforge.inputs import Features, count, named, take
from onnxforge.providers import PROVIDERS


class ProviderRejected(RuntimeError):
    """The provider could not run this model (session creation failed or fell back to another)."""


def make_session(
    path: str, provider: str, intra_op_threads: int | None = None, inter_op_threads: int = 1
) -> Any:
    """An InferenceSession pinned to one provider; raises ProviderRejected if ORT falls back."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    spec = PROVIDERS[provider]
    try:
        session = ort.InferenceSession(
            path, sess_options=options, providers=[(provider, dict(spec.default_options))]
        )
    except Exception as error:  # noqa: BLE001 - ORT raises several types for unsupported graphs
        raise ProviderRejected(f"{provider} rejected {path}: {str(error).strip()[:300]}") from None
    if session.get_providers()[0] != provider:
        raise ProviderRejected(f"{provider} fell back to {session.get_providers()[0]}")
    return session


def input_names(session: Any) -> list[str]:
    """The session's input names, in order."""
    return [graph_input.name for graph_input in session.get_inputs()]


def run_batched(session: Any, features: Features, batch_size: int = 256) -> list[np.ndarray]:
    """Run the single-input session over `features` in batches; one array per output."""
    names = input_names(session)
    chunks: list[list[np.ndarray]] = []
    for start in range(0, count(features), batch_size):
        feed = named(take(features, slice(start, start + batch_size)), names)
        chunks.append(session.run(None, feed))
    return [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]
