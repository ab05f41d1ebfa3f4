"""ONNX Runtime sessions, created one way for parity and benchmark alike."""

from __future__ import annotations

from typing import Any

from onnxforge.providers import PROVIDERS


class ProviderRejected(RuntimeError):
    """The provider could not run this model (session creation failed or fell back to another)."""


# Session settings a contender may carry beyond threads, each what ONNX Runtime's Python API takes:
# graph_optimization_level (a GraphOptimizationLevel name, e.g. ORT_ENABLE_EXTENDED),
# disabled_optimizers (names, e.g. SkipLayerNormFusion: ONNX Runtime 1.30-1.32's
# SkipLayerNormalization CPU kernel measured 47.5 ms against 10.2 ms on 1.24-1.28 per batch-16 run
# of a BERT-small-shaped encoder, and leaving the fusion out recovers it), session_config (config
# entries, e.g. session.set_denormal_as_zero), provider_options (merged over the provider's defaults).
SESSION_SETTINGS = ("graph_optimization_level", "disabled_optimizers", "session_config")
SETTING_KEYS = (*SESSION_SETTINGS, "provider_options")


def make_session(
    path: str,
    provider: str,
    intra_op_threads: int | None = None,
    inter_op_threads: int = 1,
    settings: dict[str, Any] | None = None,
) -> Any:
    """An InferenceSession pinned to one provider, with `settings` (SETTING_KEYS); raises
    ProviderRejected if ORT refuses the model or falls back to another provider."""
    import onnxruntime as ort

    settings = settings or {}
    unknown = set(settings) - set(SETTING_KEYS)
    if unknown:
        raise ValueError(f"unknown session settings {sorted(unknown)}; known: {SETTING_KEYS}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    level = settings.get("graph_optimization_level")
    if level:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in settings.get("session_config", {}).items():
        options.add_session_config_entry(key, str(value))
    provider_options = {
        **PROVIDERS[provider].default_options,
        **settings.get("provider_options", {}),
    }
    try:
        session = ort.InferenceSession(
            path,
            sess_options=options,
            providers=[(provider, provider_options)],
            disabled_optimizers=settings.get("disabled_optimizers") or None,
        )
    except Exception as error:  # noqa: BLE001 - ORT raises several types for unsupported graphs
        raise ProviderRejected(f"{provider} rejected {path}: {str(error).strip()[:300]}") from None
    if session.get_providers()[0] != provider:
        raise ProviderRejected(f"{provider} fell back to {session.get_providers()[0]}")
    return session


def input_names(session: Any) -> list[str]:
    """The session's input names, in order."""
    return [graph_input.name for graph_input in session.get_inputs()]
