"""An example automation: when a champion moves, pull the new champion (verified) for serving.

    python deployments/automation.py        # needs PREFECT_API_URL and `make serve` running

It reacts to the `onnxforge.champion.moved` event that every pipeline run emits per alias it
moved (resource `onnxforge.model.<name>`, payload: model, version, alias, variant, reason,
previous, mlflow_run_id), and runs the `pull-champion/pull-champion` deployment (served by
deployments/serve.py) with the event's model and alias. Replace the action with any other
Prefect action (a notification block, a webhook, another deployment) the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AUTOMATION_NAME = "onnxforge-pull-on-champion-move"
PULL_DEPLOYMENT = "pull-champion/pull-champion"


def champion_moved_automation(deployment_id: Any) -> Any:
    """The automation object: one champion.moved event of any onnxforge model runs the pull."""
    from prefect.automations import Automation, EventTrigger, Posture, RunDeployment

    from tasks.outcome import CHAMPION_MOVED

    return Automation(
        name=AUTOMATION_NAME,
        description="Pull (sha256-checked) every new champion of an onnxforge model.",
        tags=["onnxforge"],
        trigger=EventTrigger(
            expect={CHAMPION_MOVED},
            match={"prefect.resource.id": "onnxforge.model.*"},
            for_each={"prefect.resource.id"},  # one firing per model
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                # Jinja templates, filled from the triggering event when the action runs.
                parameters={
                    "model": "{{ event.payload.model }}",
                    "alias": "{{ event.payload.alias }}",
                },
            )
        ],
    )


def create_automation(deployment_name: str = PULL_DEPLOYMENT) -> Any:
    """Create (or replace) the automation on the Prefect server in PREFECT_API_URL."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
    try:
        Automation.read(name=AUTOMATION_NAME).delete()
    except ValueError:
        pass  # no automation of that name yet: nothing to replace
    return champion_moved_automation(deployment.id).create()


def main() -> None:
    from tasks.outcome import CHAMPION_MOVED

    automation = create_automation()
    print(
        f"automation {automation.name} ({automation.id}): on {CHAMPION_MOVED} -> run {PULL_DEPLOYMENT}"
    )


if __name__ == "__main__":
    main()
