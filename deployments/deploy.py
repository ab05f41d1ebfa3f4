"""Register the same deployments as serve.py on a process work pool, for `prefect worker start`.

    python deployments/deploy.py --pool onnxforge-process
    prefect worker start --pool onnxforge-process

The pool is created (type `process`) when it does not exist, with a concurrency limit of 2 (how
many flow runs all its workers run at once); `--concurrency-limit N` sets it, also on an
existing pool. Every recipe's nightly run starts at 02:00 UTC and the runs fan out over the
pool's workers; start more than one worker to share them. A worker runs each flow run in a new process that reads the
flow's code from this checkout, so start the workers on this machine (or on hosts with the same
checkout at the same path).

The deployments keep their names (one per recipe, from deployments/definitions.py). A deployment
of that name that `serve.py` serves (no work pool) is not taken over silently: the command stops
and names it, and `--replace` moves it to the pool (stop `make serve` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


NEW_POOL_LIMIT = 2  # a pool this command creates runs at most two flow runs at once


def ensure_process_pool(name: str, concurrency_limit: int | None = None) -> None:
    """Create the work pool `name` (type process) unless it exists, with `concurrency_limit`
    (how many flow runs its workers run at once, all workers together; NEW_POOL_LIMIT when not
    given). An existing pool's limit changes only when one is given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            limit = concurrency_limit or NEW_POOL_LIMIT
            client.create_work_pool(
                WorkPoolCreate(name=name, type="process", concurrency_limit=limit)
            )
            return
        if concurrency_limit is not None:
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))


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


def deploy_all(pool: str, replace: bool = False, concurrency_limit: int | None = None) -> list[str]:
    """Register every deployment on `pool` (its concurrency limit set when given); returns
    their ids."""
    from prefect import deploy

    from deployments.definitions import pool_deployments
    from deployments.pull_champion import DEPLOYMENT_NAME
    from deployments.pull_champion import pull_champion as pull_flow

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
    ensure_process_pool(pool, concurrency_limit)  # after the refusal: it changes nothing then
    ids = deploy(*deployments, work_pool_name=pool, build=False, push=False)
    return [str(i) for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="onnxforge-process", help="process work pool name")
    parser.add_argument(
        "--replace", action="store_true", help="take over deployments that serve.py registered"
    )
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=None,
        help="flow runs the pool runs at once, over all its workers (a new pool: 2; an "
        "existing pool keeps its limit unless this is given)",
    )
    args = parser.parse_args()
    if args.concurrency_limit is not None and args.concurrency_limit < 1:
        parser.error(f"--concurrency-limit: expected 1 or more, got {args.concurrency_limit}")
    for deployment_id in deploy_all(args.pool, args.replace, args.concurrency_limit):
        print(deployment_id)


if __name__ == "__main__":
    main()
