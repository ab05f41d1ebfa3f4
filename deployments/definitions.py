"""Every deployment of the pipeline, defined once: one per recipe in configs/.

`deployments/serve.py` serves these objects and `deployments/deploy.py` registers the same ones
on a process work pool, so the served and the work-pool deployments cannot drift apart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: `python deployments/serve.py`
    sys.path.insert(0, str(REPO))

FLOW_NAME = "onnx-pipeline"
ENTRYPOINT = "flows/onnx_pipeline.py:onnx_pipeline"
FIRST_HOUR_UTC = 2  # the first recipe starts at 02:00 UTC, the next ones 30 minutes apart
TAGS = ("onnxforge", "nightly")


@dataclass(frozen=True)
class DeploymentSpec:
    """What one recipe's deployment is: its name, schedule, tags, parameters and description."""

    recipe_path: str  # relative to the repository root, as the flow's `recipe_path` parameter
    name: str
    cron: str
    tags: tuple[str, ...]
    description: str

    @property
    def parameters(self) -> dict[str, Any]:
        return {"recipe_path": self.recipe_path}

    def deployment_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Flow.to_deployment`: the same on every path."""
        from prefect.schedules import Cron

        return {
            "name": self.name,
            "schedules": [Cron(self.cron, timezone="UTC")],
            # No deployment concurrency limit: Prefect frees its slot when a run pauses for
            # approval, and the paused run is then cancelled. One run of a recipe at a time is
            # tasks.locks.one_run_per_recipe, held by the run itself. None (not left out) also
            # removes the limit from a deployment registered with one before.
            "concurrency_limit": None,
            "parameters": self.parameters,
            "tags": list(self.tags),
            "description": self.description,
        }


def _model_name(recipe: Path) -> str:
    """The registered model a recipe writes (read as plain YAML: no validation, no imports)."""
    import yaml

    data = yaml.safe_load(recipe.read_text()) or {}
    return str((data.get("register") or {}).get("model_name") or data.get("name") or recipe.stem)


def deployment_specs(
    configs: Path = REPO / "configs", stagger: bool = True
) -> list[DeploymentSpec]:
    """One spec per configs/*.yaml, in name order.

    Staggered (served by one process, `make serve`): each starts 30 minutes after the previous.
    Not staggered (a work pool, `make deploy`): all start at once and fan out over the pool's
    workers; the pool's concurrency limit bounds how many run at the same time.
    """
    specs = []
    for index, recipe in enumerate(sorted(configs.glob("*.yaml"))):
        minutes = FIRST_HOUR_UTC * 60 + (30 * index if stagger else 0)
        cron = f"{minutes % 60} {minutes // 60 % 24} * * *"
        model = _model_name(recipe)
        specs.append(
            DeploymentSpec(
                recipe_path=f"configs/{recipe.name}",
                name=f"{recipe.stem}-nightly",
                cron=cron,
                tags=(*TAGS, recipe.stem),
                description=(
                    f"Nightly at {cron.split()[1]}:{int(cron.split()[0]):02d} UTC: train, export, "
                    f"simplify, quantize, check parity, benchmark and register `{model}` from "
                    f"configs/{recipe.name}. Run it by hand with other `overrides` "
                    '(e.g. {"train.epochs": 3}); champion moves only on evidence.'
                ),
            )
        )
    return specs


def served_deployments(flow: Any = None) -> list[Any]:
    """The RunnerDeployments for `prefect.serve`: the flow object imported in this process."""
    if flow is None:
        from flows.onnx_pipeline import onnx_pipeline as flow
    return [flow.to_deployment(**spec.deployment_kwargs()) for spec in deployment_specs()]


def pool_deployments() -> list[Any]:
    """The same deployments for a work pool: the flow's code is read from this checkout."""
    from prefect import flow as prefect_flow

    source = prefect_flow.from_source(source=str(REPO), entrypoint=ENTRYPOINT)
    specs = deployment_specs(stagger=False)  # fanned out over the pool's workers
    return [source.to_deployment(**spec.deployment_kwargs()) for spec in specs]
