"""Register the same deployments as serve.py on a process work pool, for `prefect worker start`.

    python deployments/deploy.py --pool onnxforge-process
    prefect worker start --pool onnxforge-process

The pool is created (type `process`) when it does not exist. The worker runs each flow run in a
new process that reads the flow's code from this checkout, so start it on this machine.

The deployments keep their names (one per recipe, from deployments/definitions.py). A deployment
of that name that `serve.py` serves (no work pool) is not taken over silently: the command stops
and names it, and `--replace` moves it to the pool (stop `make serve` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def ensure_process_pool(name: str) -> None:
    """Create the work pool `name` (type process) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def served_deployments_in_the_way(names: list[str]) -> list[str]:
    """Those of `names` (flow/deployment) that exist without a work pool, i.e. are served."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    served = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                if client.read_deployment_by_name(name).work_pool_name is None:
                    served.append(name)
            except ObjectNotFound:
                continue
    return served


def deploy_all(pool: str, replace: bool = False) -> list[str]:
    """Register every deployment on `pool`; returns their ids."""
    from prefect import deploy

    from deployments.definitions import pool_deployments
    from deployments.pull_champion import DEPLOYMENT_NAME
    from deployments.pull_champion import pull_champion as pull_flow

    ensure_process_pool(pool)
    pull = pull_flow.from_source(
        source=str(Path(__file__).resolve().parent), entrypoint="pull_champion.py:pull_champion"
    ).to_deployment(name=DEPLOYMENT_NAME, tags=["onnxforge", "deploy"])
    deployments = [*pool_deployments(), pull]
    served = served_deployments_in_the_way([f"{d.flow_name}/{d.name}" for d in deployments])
    if served and not replace:
        raise SystemExit(
            f"error: {', '.join(served)} served by a process (deployments/serve.py); deploying "
            f"them to work pool {pool} would take them over. Stop the serving process and run "
            "again with --replace."
        )
    ids = deploy(*deployments, work_pool_name=pool, build=False, push=False)
    return [str(i) for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="onnxforge-process", help="process work pool name")
    parser.add_argument(
        "--replace", action="store_true", help="take over deployments that serve.py registered"
    )
    args = parser.parse_args()
    for deployment_id in deploy_all(args.pool, args.replace):
        print(deployment_id)


if __name__ == "__main__":
    main()
