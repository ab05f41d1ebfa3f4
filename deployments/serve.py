"""Serve every recipe's nightly deployment from this process (needs PREFECT_API_URL: `make server`).

    python deployments/serve.py

One deployment per recipe in configs/ (`<recipe>-nightly`, see deployments/definitions.py), plus
`pull-champion/pull-champion`, which the example automation (deployments/automation.py) runs
when a champion moves. The process stays up, runs the schedules and every run triggered from
the UI or the API.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    """Register the deployments with the running Prefect server and serve them."""
    from prefect import serve

    from deployments.definitions import served_deployments
    from deployments.pull_champion import pull_champion_deployment

    serve(*served_deployments(), pull_champion_deployment())


if __name__ == "__main__":
    main()
