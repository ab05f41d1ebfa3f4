"""ONNX Runtime sessions, created one way for parity and benchmark alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxforge.providers import PROVIDERS


class ProviderRejected(RuntimeError):
    """The provider could not run this model (session creation failed or fell back to another)."""


# Session settings a contender may carry beyond threads, each what ONNX Runtime's Python API takes:
# graph_optimization_level (a GraphOptimizationLevel name, e.g. ORT_ENABLE_EXTENDED),
# disabled_optimizers (names, e.g. SkipLayerNormFusion: ONNX Runtime 1.30-1.32's
# SkipLayerNormalization CPU kernel measured 47.5 ms against 10.2 ms on 1.24-1.28 per batch-16 run
# of a BERT-small-shaped encoder, and leaving the fusion out recovers it), session_config (config
# entries, e.g. session.set_denormal_as_zero), execution_mode (sequential or parallel: ONNX
# Runtime's ExecutionMode), provider_options (merged over the provider's defaults).
SESSION_SETTINGS = (
    "graph_optimization_level",
    "disabled_optimizers",
    "session_config",
    "execution_mode",
)
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
    mode = settings.get("execution_mode")
    if mode:
        options.execution_mode = getattr(ort.ExecutionMode, f"ORT_{mode.upper()}")
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


class RuntimeMismatch(RuntimeError):
    """A pulled profile was measured on another runtime build than this interpreter's."""


def session_from(
    folder: str | Path,
    provider: str | None = None,
    *,
    allow_other_runtime: bool = False,
) -> Any:
    """The InferenceSession a pulled folder's manifest says was measured: model.onnx, re-checked
    against the manifest's sha256, built by make_session with the profile's provider, threads
    and settings (manifest "profile", from the version's `profile.<provider>` tag).

    A profile measured on another runtime build (another onnxruntime version or distribution, or
    another interpreter) is refused with RuntimeMismatch, naming both; `allow_other_runtime=True`
    builds it here anyway. `provider` must be the profile's (pull with `--provider` for another
    provider's profile). A manifest without a profile (a version registered before profiles, or
    not chosen for the pulled provider) gives ONNX Runtime's default session on `provider`,
    CPUExecutionProvider when None. The sha256 check catches a file changed or cut short since
    the pull, not a folder whose manifest was rewritten with it: `onnxforge pull` checks against
    the registry.
    """
    import json

    from onnxforge.errors import IntegrityError, Sha256Mismatch
    from onnxforge.onnx_files import sha256_of

    folder = Path(folder).expanduser()
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{folder}: no manifest.json; expected a folder written by `onnxforge pull`"
        ) from None
    except ValueError as error:
        raise IntegrityError(f"{manifest_path}: not JSON ({error})") from None
    path = folder / "model.onnx"
    expected = manifest.get("sha256")
    if not expected:
        raise IntegrityError(f"{manifest_path}: records no sha256 to check model.onnx against")
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no model.onnx beside its manifest.json")
    actual = sha256_of(path)
    if actual != expected:
        raise Sha256Mismatch(
            f"{path}: sha256 mismatch: the manifest records {expected}, the file is {actual}; "
            "pull it again"
        )
    profile = manifest.get("profile")
    if not profile:
        return make_session(str(path), provider or "CPUExecutionProvider", None, 0, {})
    measured_on = profile.get("provider")
    if provider and measured_on and provider != measured_on:
        raise ValueError(
            f"{folder}: its profile {profile.get('name')!r} was measured on {measured_on}, not "
            f"{provider}; pull with `--provider {provider}` for that provider's profile"
        )
    if not allow_other_runtime:
        _check_runtime(folder, profile)
    return make_session(
        str(path),
        measured_on or provider or "CPUExecutionProvider",
        profile.get("intra_op_threads"),
        profile.get("inter_op_threads") or 1,
        profile.get("settings") or {},
    )


def _check_runtime(folder: Path, profile: dict[str, Any]) -> None:
    """Refuse a profile whose runtime build (interpreter, onnxruntime distribution and version)
    is not this interpreter's."""
    import os
    import sys

    from onnxforge.profiles import runtime_build

    measured = profile.get("runtime") or {}
    here = runtime_build(None)
    python = measured.get("python")
    same_python = python is None or os.path.abspath(python) == os.path.abspath(sys.executable)
    same = same_python and all(
        measured.get(key) == here[key] for key in ("distribution", "onnxruntime")
    )
    if same:
        return

    def build(runtime: dict[str, Any], interpreter: str) -> str:
        return (
            f"{runtime.get('distribution') or 'unknown distribution'} "
            f"{runtime.get('onnxruntime') or 'unknown version'} ({interpreter})"
        )

    raise RuntimeMismatch(
        f"{folder}: profile {profile.get('name')!r} was measured on "
        f"{build(measured, python or 'the pipeline interpreter')}, but this interpreter has "
        f"{build(here, sys.executable)}; its speed and numerics need not hold here. Run it "
        "with that build, or pass allow_other_runtime=True to build the session here anyway"
    )
