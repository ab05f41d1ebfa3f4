"""The flow that tests/flows/test_pool_lockdown.py deploys on a locked work pool: it writes, to
the file its parameter names, what the flow run's process was given (the variables that would
widen what a recipe may do, and its working folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow

WATCHED = ("ONNXFORGE_TRUSTED_OVERRIDES", "ONNXFORGE_IMPORT_MODULES", "PYTHONPATH")


@flow(name="pool-lockdown-probe")
def probe(out: str) -> None:
    seen = {name: os.environ.get(name) for name in WATCHED}
    Path(out).write_text(json.dumps({**seen, "cwd": os.getcwd()}))
