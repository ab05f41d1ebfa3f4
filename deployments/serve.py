"""Serve the nightly deployment of the default recipe (needs PREFECT_API_URL: `make server`).

    python deployments/serve.py [--cron "0 2 * * *"] [--recipe configs/digits_cnn.yaml]

The process stays up, runs the flow on schedule and whenever a run is triggered from the UI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEPLOYMENT_NAME = "digits-nightly"
NIGHTLY_CRON = "0 2 * * *"


def nightly_deployment(
    recipe_path: str = "configs/digits_cnn.yaml", cron: str = NIGHTLY_CRON
) -> Any:
    """The deployment object: the flow, its recipe parameter and a nightly cron schedule."""
    from flows.onnx_pipeline import onnx_pipeline

    return onnx_pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        cron=cron,
        parameters={"recipe_path": recipe_path},
        tags=["onnxforge", "nightly"],
        description="Retrain, export, validate, benchmark and register the default recipe.",
    )


def main() -> None:
    """Register the deployment with the running Prefect server and serve it."""
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cron", default=NIGHTLY_CRON)
    parser.add_argument("--recipe", default="configs/digits_cnn.yaml")
    args = parser.parse_args()
    serve(nightly_deployment(args.recipe, args.cron))


if __name__ == "__main__":
    main()
