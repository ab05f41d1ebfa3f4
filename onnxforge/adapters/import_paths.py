"""Bring-your-own code by import path (`package.module:Name`), inside the operator's allow-list.

Its own module so that an architecture's check can resolve a path without importing a
framework adapter (architectures.py -> pytorch.py -> torch_models.py -> architectures.py was an
import cycle)."""

from __future__ import annotations

from typing import Any


def import_object(path: str) -> Any:
    """`package.module:Name` -> the object (the working directory is importable, as for `python -m`).

    Only modules inside the operator's allow-list (ONNXFORGE_IMPORT_MODULES) are imported, and
    the object must be defined there: `allowed_module:os.system` walks through a module and is
    refused, as is a name the allowed module merely imported from elsewhere.
    """
    import importlib
    import os
    import sys
    import types

    from onnxforge.trust import IMPORT_MODULES_ENV, check_import_path, import_allowed

    check_import_path(path)  # raises ValueError before anything is imported
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except ImportError:
        raise  # the caller names the missing module
    except SyntaxError as error:
        raise ValueError(
            f"cannot import {path!r}: SyntaxError in {error.filename} line {error.lineno}: "
            f"{error.msg}"
        ) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the module's own code raised
        raise ValueError(
            f"cannot import {path!r}: importing {module_name} raised {_raised(error)}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a module-level __getattr__
            raise ValueError(
                f"cannot import {path!r}: reading {part} raised {_raised(error)}"
            ) from None
        if isinstance(target, types.ModuleType):
            raise ValueError(f"import path {path!r} walks into module {target.__name__!r}")
    defined_in = getattr(target, "__module__", None) or "?"
    if not import_allowed(defined_in):
        raise ValueError(
            f"import path {path!r} names an object defined in {defined_in!r}, outside "
            f"{IMPORT_MODULES_ENV}; import its own module instead"
        )
    return target


def _raised(error: BaseException) -> str:
    """'Type at file:line: first line of the message', from where the error was raised."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}{where}: {lines[0] if lines else '(no message)'}"
