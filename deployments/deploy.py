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

A pool this command creates has a locked base job template (LOCKED_TEMPLATE): a flow run's job
variables can set no command, no environment and no working folder on its workers; the server
refuses a run or deployment that sends any job variable, and a worker ignores those that reach
it another way (a plain flow run created with job variables is not checked by the server). Flow
runs get the worker's own environment. An existing pool with another template is refused (exit
2) until `--lock-pool` replaces its template. `--pool-only` creates or locks the pool and
registers nothing: that is how to create the pools that `benchmark.pools` names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


NEW_POOL_LIMIT = 2  # a pool this command creates runs at most two flow runs at once

# The process worker's base job template with every job variable taken out. Prefect's default
# exposes `command` (run instead of the flow), `env` (merged into the flow run's environment:
# ONNXFORGE_TRUSTED_OVERRIDES, ONNXFORGE_IMPORT_MODULES, PYTHONPATH) and `working_dir` (the
# flow run's folder, first on its sys.path). A worker fills only the placeholders of
# `job_configuration`, so with none there, a job variable that reaches it changes nothing: the
# flow run starts Prefect's engine in a fresh temporary folder with the worker's environment.
# `additionalProperties: false` makes the server refuse (422) a deployment or a deployment's
# flow run that sends any job variable, so such a run is never created.
LOCKED_TEMPLATE: dict = {
    "job_configuration": {"stream_output": True},
    "variables": {"type": "object", "properties": {}, "additionalProperties": False},
}


class PoolNotLocked(Exception):
    """An existing work pool whose base job template lets job variables through."""


def open_job_variables(template: dict | None) -> list[str]:
    """The job variables a pool's base job template passes to its workers: the names in its
    `job_configuration` placeholders, plus `env` when that is a fixed mapping (a worker merges
    a run's `env` into it). Empty for LOCKED_TEMPLATE."""
    import re

    configuration = (template or {}).get("job_configuration") or {}
    names = set(re.findall(r"{{\s*([\w.]+)\s*}}", json.dumps(configuration)))
    if isinstance(configuration.get("env"), dict):
        names.add("env")
    return sorted(names)


def ensure_process_pool(
    name: str, concurrency_limit: int | None = None, lock: bool = False
) -> None:
    """Create the work pool `name` (type process, LOCKED_TEMPLATE) unless it exists, with
    `concurrency_limit` (how many flow runs its workers run at once, all workers together;
    NEW_POOL_LIMIT when not given). An existing pool's limit changes only when one is given; its
    template is replaced by LOCKED_TEMPLATE with `lock`, and without it a template that lets job
    variables through raises PoolNotLocked (before anything changes)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            limit = concurrency_limit or NEW_POOL_LIMIT
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    concurrency_limit=limit,
                    base_job_template=LOCKED_TEMPLATE,
                )
            )
            return
        opened = open_job_variables(pool.base_job_template)
        if opened and pool.type != "process":
            raise PoolNotLocked(
                f"work pool {name} (type {pool.type}) lets a flow run's job variables through "
                f"to its workers ({', '.join(opened)}); --lock-pool writes a process pool's "
                "template only: take them out of its base job template yourself "
                "(docs/server-mode.md, Kubernetes or Docker)"
            )
        if opened and not lock:
            raise PoolNotLocked(
                f"work pool {name} lets a flow run's job variables through to its workers "
                f"({', '.join(opened)}), so whoever holds the Prefect auth string could run a "
                "command or switch on ONNXFORGE_TRUSTED_OVERRIDES there; run again with "
                "--lock-pool (make deploy LOCK_POOL=1) to replace its base job template with one that "
                "passes none"
            )
        update = {}
        if opened:
            update["base_job_template"] = LOCKED_TEMPLATE
        if concurrency_limit is not None:
            update["concurrency_limit"] = concurrency_limit
        if update:
            client.update_work_pool(name, WorkPoolUpdate(**update))


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


def deploy_all(
    pool: str, replace: bool = False, concurrency_limit: int | None = None, lock: bool = False
) -> list[str]:
    """Register every deployment on `pool` (its concurrency limit set when given, its template
    locked with `lock`: ensure_process_pool); returns their ids."""
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
    ensure_process_pool(pool, concurrency_limit, lock)  # after the refusal: it changes nothing then
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
    parser.add_argument(
        "--lock-pool",
        action="store_true",
        help="replace an existing pool's base job template with one that lets no job variable "
        "(command, env, working_dir) through to its workers",
    )
    parser.add_argument(
        "--pool-only",
        action="store_true",
        help="create (or lock) the pool and register nothing, e.g. a pool that benchmark.pools "
        "names",
    )
    args = parser.parse_args()
    if args.concurrency_limit is not None and args.concurrency_limit < 1:
        parser.error(f"--concurrency-limit: expected 1 or more, got {args.concurrency_limit}")
    try:
        if args.pool_only:
            ensure_process_pool(args.pool, args.concurrency_limit, args.lock_pool)
            print(f"work pool {args.pool}: locked (job variables pass nothing to its workers)")
            return
        ids = deploy_all(args.pool, args.replace, args.concurrency_limit, args.lock_pool)
    except PoolNotLocked as refused:
        print(f"error: {refused}", file=sys.stderr)
        raise SystemExit(2) from None
    for deployment_id in ids:
        print(deployment_id)


if __name__ == "__main__":
    main()
