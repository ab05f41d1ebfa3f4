"""The exception types the tools raise when they refuse a model, as opposed to our own bugs.

A stage that records "this provider cannot run this variant" as a result catches only these; a
TypeError, AttributeError or KeyError from onnxforge's own code is a bug and must raise.
"""

from __future__ import annotations

import sys

from onnxforge.runtime import ProviderRejected

# ONNX Runtime's own exceptions (pybind11 types, all direct subclasses of Exception).
_ORT_NAMES = (
    "Fail",
    "InvalidArgument",
    "NoSuchFile",
    "NoModel",
    "EngineError",
    "RuntimeException",
    "InvalidProtobuf",
    "ModelLoaded",
    "NotImplemented",
    "InvalidGraph",
    "EPFail",
    "ModelLoadCanceled",
    "ModelRequiresCompilation",
    "NotFound",
    "DeviceReset",
)


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's error types, plus ours for a provider that rejected or fell back."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = tuple(getattr(state, name) for name in _ORT_NAMES if hasattr(state, name))
    return (ProviderRejected, MemoryError, *found)


def framework_errors() -> tuple[type[BaseException], ...]:
    """What the source frameworks raise for a model they cannot run: PyTorch raises RuntimeError
    (its out-of-memory and not-implemented errors derive from it), TensorFlow its OpError."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, MemoryError)
    tensorflow = sys.modules.get("tensorflow")  # only when a Keras recipe already imported it
    if tensorflow is not None:
        errors += (tensorflow.errors.OpError,)
    return errors
