"""Runtime profiles: how a session is built (runtime build, provider options, session options).

A profile is what a deployer needs to rebuild the session that was measured. The recipe lists
the profiles its benchmark tries (`benchmark.profiles`); every benchmark row and parity result
names its profile, a registered version stores the profile it was chosen under (version tag
`profile.<provider short name>`, JSON), `pull` writes it into the manifest under "profile", and
`onnxforge.runtime.session_from(folder)` builds the session from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DEFAULT = "default"
PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
OPTIMIZATION_LEVELS = (
    "ORT_DISABLE_ALL",
    "ORT_ENABLE_BASIC",
    "ORT_ENABLE_EXTENDED",
    "ORT_ENABLE_ALL",
)


class RuntimeProfile(BaseModel):
    """One way to build an InferenceSession; unset fields keep ONNX Runtime's defaults.

    python: the interpreter of another runtime build (say a venv with onnxruntime-openvino,
    which installs the same `onnxruntime` module and cannot share the pinned environment);
    None is the pinned build. when_ops: the profile is tried only on graphs that hold one of
    these operator types (a remedy for a fusion applies only where the fusion can fire); empty:
    on every graph. providers: the providers it is tried on; empty: all of the benchmark's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=PROFILE_NAME_PATTERN)]
    python: str | None = None
    graph_optimization_level: Literal[OPTIMIZATION_LEVELS] | None = None  # type: ignore[valid-type]
    disabled_optimizers: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64
    )
    session_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    provider_options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    execution_mode: Literal["sequential", "parallel"] | None = None
    when_ops: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64
    )
    providers: list[str] = Field(default_factory=list, max_length=16)

    @field_validator("python")
    @classmethod
    def _against_the_recipe(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A relative interpreter path is read against the recipe's folder, like every recipe
        path; never resolved through symlinks (a venv's python is one, and it must stay one)."""
        if value is None:
            return None
        path = Path(value).expanduser()
        base = Path((info.context or {}).get("base_dir", "."))
        return str(path if path.is_absolute() else base / path)

    def settings(self) -> dict[str, Any]:
        """The session settings onnxforge.runtime.make_session takes (only those set)."""
        settings: dict[str, Any] = {}
        if self.graph_optimization_level:
            settings["graph_optimization_level"] = self.graph_optimization_level
        if self.disabled_optimizers:
            settings["disabled_optimizers"] = list(self.disabled_optimizers)
        if self.session_config:
            # ONNX Runtime reads config entries as strings ("1"/"0" for switches)
            settings["session_config"] = {
                key: str(int(value)) if isinstance(value, bool) else str(value)
                for key, value in self.session_config.items()
            }
        if self.provider_options:
            settings["provider_options"] = dict(self.provider_options)
        if self.execution_mode:
            settings["execution_mode"] = self.execution_mode
        return settings

    def applies_to(self, op_types: set[str], provider: str) -> bool:
        """Whether this profile is tried on a graph holding `op_types`, on `provider`."""
        if self.providers and provider not in self.providers:
            return False
        return not self.when_ops or bool(op_types & set(self.when_ops))


def labelled(name: str, profile: str) -> str:
    """A (variant, profile) pair's name in tables and metric keys: the variant alone under the
    default profile, `<variant>/<profile>` under another."""
    return name if profile == DEFAULT else f"{name}/{profile}"


def profiles_for(
    profiles: list[RuntimeProfile] | tuple[RuntimeProfile, ...], path: str, provider: str
) -> list[RuntimeProfile]:
    """The profiles tried on one ONNX file on one provider (when_ops, providers)."""
    needed = any(profile.when_ops for profile in profiles)
    ops = op_types(path) if needed else set()
    return [profile for profile in profiles if profile.applies_to(ops, provider)]


def op_types(path: str) -> set[str]:
    """Operator types in an ONNX file's main graph (weights not loaded)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return {node.op_type for node in model.graph.node}


# ONNX Runtime 1.30-1.32's SkipLayerNormalization CPU kernel measured 47.5 ms against 10.2 ms
# on 1.24-1.28 per batch-16 run of a BERT-small-shaped encoder (AMD EPYC, 1 thread); leaving the
# fusion out recovers it. It can fire only where a LayerNormalization (or its decomposed
# ReduceMean form) follows an Add, hence when_ops.
SKIP_LAYER_NORM_REMEDY = RuntimeProfile(
    name="no-skiplayernorm",
    disabled_optimizers=["SkipLayerNormFusion"],
    when_ops=["LayerNormalization", "SimplifiedLayerNormalization"],
    providers=["CPUExecutionProvider"],
)
DEFAULT_PROFILES = (RuntimeProfile(name=DEFAULT), SKIP_LAYER_NORM_REMEDY)


def deployed_profile(
    profile: RuntimeProfile, provider: str, intra_op_threads: int | None, inter_op_threads: int
) -> dict[str, Any]:
    """What a version stores for one provider: the profile, the provider, the threads it was
    measured with, and the runtime build that measured it (onnxruntime distribution, version)."""
    return {
        "name": profile.name,
        "provider": provider,
        "intra_op_threads": intra_op_threads,
        "inter_op_threads": inter_op_threads,
        "settings": profile.settings(),
        "runtime": runtime_build(profile.python),
    }


def runtime_build(python: str | None) -> dict[str, str | None]:
    """The runtime build's interpreter, onnxruntime distribution and version. For the pinned
    build this interpreter's; another build's are read once from its interpreter."""
    if python is None:
        return {"python": None, **_local_build()}
    return {"python": python, **_foreign_build(python)}


def _local_build() -> dict[str, str | None]:
    from importlib import metadata

    import onnxruntime

    return {"distribution": _distribution(metadata), "onnxruntime": onnxruntime.__version__}


def _distribution(metadata: Any) -> str | None:
    """Which pip distribution installed the onnxruntime module (onnxruntime, -gpu, -openvino)."""
    names = metadata.packages_distributions().get("onnxruntime", [])
    return names[0] if names else None


_FOREIGN: dict[str, dict[str, str | None]] = {}


def _foreign_build(python: str) -> dict[str, str | None]:
    import subprocess

    if python not in _FOREIGN:
        code = (
            "import json, onnxruntime; from importlib import metadata; "
            "n = metadata.packages_distributions().get('onnxruntime', []); "
            "print(json.dumps({'distribution': n[0] if n else None, "
            "'onnxruntime': onnxruntime.__version__}))"
        )
        result = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        lines = result.stdout.strip().splitlines()
        _FOREIGN[python] = (
            json.loads(lines[-1])
            if result.returncode == 0 and lines
            else {"distribution": None, "onnxruntime": None}
        )
    return _FOREIGN[python]


def check_interpreter(profile: RuntimeProfile, field: str) -> str | None:
    """Why a profile's interpreter cannot be used (missing, not executable), or None."""
    if profile.python is None:
        return None
    path = Path(profile.python)
    if not path.is_file():
        return f"{field}.python: {profile.python} does not exist; expected a Python interpreter"
    import os

    if not os.access(path, os.X_OK):
        return f"{field}.python: {profile.python} is not executable"
    return None
