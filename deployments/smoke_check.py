"""The check at the end of deployments/smoke_stack.sh: did the pool's worker measure the
registered version's CPU benchmark?

    python deployments/smoke_check.py RECIPE POOL WORKER

Reads the newest version of the recipe's registered model (MLFLOW_TRACKING_URI and its
credentials from the environment), its run's benchmark/bench.json and summary.md, and exits 0
only when every CPU row (the framework baseline's included) was measured `ok` by WORKER of POOL
and the summary says so. Prints one line either way.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CPU = "CPUExecutionProvider"


def main(recipe_path: str, pool: str, worker: str) -> int:
    import mlflow

    from onnxforge.recipe import load_recipe
    from onnxforge.tracking import client

    recipe = load_recipe(recipe_path)
    mlflow_client = client(os.environ["MLFLOW_TRACKING_URI"])
    name = recipe.registry.model_name
    versions = mlflow_client.search_model_versions(f"name='{name}'")
    if not versions:
        print(f"no version of {name} was registered")
        return 1
    version = max(versions, key=lambda v: int(v.version))
    with tempfile.TemporaryDirectory() as scratch:
        table = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path="benchmark/bench.json", dst_path=scratch
                )
            ).read_text()
        )
        summary = mlflow_client.download_artifacts(version.run_id, "summary.md", scratch)
        summary_text = Path(summary).read_text()
    rows = [row for row in table if row.get("group") == CPU]
    wrong = [
        f"{row['variant']} bs{row['batch_size']}: {row['status']} by {row.get('worker')!r} "
        f"of {row.get('pool')!r}"
        for row in rows
        if row["status"] != "ok" or row.get("pool") != pool or row.get("worker") != worker
    ]
    if not rows or wrong:
        print(
            f"{name} v{version.version}: CPU rows not all measured by {worker} of {pool}: {wrong}"
        )
        return 1
    if f"worker {worker} of work pool {pool}" not in summary_text:
        print(f"{name} v{version.version}: summary.md does not say {worker} of {pool} measured it")
        return 1
    hosts = sorted({row["host"] for row in rows})
    print(
        f"{name} v{version.version} registered; its {len(rows)} CPU benchmark rows were measured "
        f"by worker {worker} of pool {pool} on {', '.join(hosts)}; stack and workers stopped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
