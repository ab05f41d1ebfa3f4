"""The flow the example automation runs when a champion moves: a verified pull of the new champion.

It does what a serving host does with `onnxforge pull NAME@ALIAS --to DIR`: download the
version that holds the alias, check its sha256 against the registry's record, and only then
swap DIR/model.onnx and DIR/manifest.json in. A server then loads it with
`onnxforge.runtime.session_from(DIR)`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow  # noqa: E402

DEPLOYMENT_NAME = "pull-champion"
ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")


@flow(name="pull-champion", log_prints=True)
def pull_champion(model: str, alias: str = "champion") -> dict[str, Any]:
    """Pull the version that holds `alias` of registered model `model`, checked by sha256, into
    `$ONNXFORGE_HOME/deployed/<model>@<alias>`: one folder per alias, so the pulls that one run's
    `champion` and `champion-cpu` moves start at the same time never share a folder.

    Args:
        model: the registered model's name, e.g. text-transformer.
        alias: the alias to pull (champion, champion-cpu, ...).
    """
    from onnxforge.consumer import pull
    from onnxforge.tracking import resolve_tracking_uri, state_dir
    from onnxforge.trust import check_safe_name

    # Both come from an event payload or the API: neither may name a folder of its own choosing.
    check_safe_name(model)
    if not ALIAS.fullmatch(alias):
        raise ValueError(f"alias: expected letters, digits, '-' or '_'; got {alias!r}")
    target = state_dir() / "deployed" / f"{model}@{alias}"
    manifest = pull(resolve_tracking_uri(), f"{model}@{alias}", target)
    print(f"pulled {model} v{manifest.get('version')} ({alias}) into {target}")
    return manifest


def pull_champion_deployment() -> Any:
    """Its deployment: no schedule; the automation (or a person) triggers it."""
    return pull_champion.to_deployment(
        name=DEPLOYMENT_NAME,
        tags=["onnxforge", "deploy"],
        description="Verified pull of a registered model's champion (run by the automation "
        "`onnxforge-pull-on-champion-move` when onnxforge.champion.moved is emitted).",
    )
