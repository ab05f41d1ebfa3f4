"""The fleet of workers, measured on this machine: fan-out wall time and dispatch overhead.

    .venv/bin/python benchmarks/fanout.py [--repeats 1]

Starts the team stack (deployments/start_servers.sh, BACKEND=postgres) in a temporary folder,
registers every recipe's deployment on a process work pool with a concurrency limit of 2
(deployments/deploy.py), and then:

1. Fan-out: one run of every recipe in configs/ (shortened: one epoch, short benchmark rounds,
   no cache), started at once, with one worker and then with two workers on the pool (each
   worker takes one run at a time: `prefect worker start --limit 1`). Wall time is from the
   first run created to the last one finished. A first fan-out is not counted: after it every
   recipe has a champion, so every counted run has the same work. With --repeats N the order
   alternates (1, 2, 2, 1, ...) so drift on a shared machine hits both sides.
2. Dispatch overhead: the default recipe with its CPU benchmark mapped to the pool, run by the
   CLI; the run's metrics bench_dispatch.CPUExecutionProvider.wall_s (shipping the files,
   waiting for a worker, measuring, reading the rows back) against .measure_s (the worker's
   fetching, checking and measuring).

Prints one JSON line per figure and a closing JSON summary. Compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
POOL = "fanout"
# Enough of each stage to exercise it; the figure is about orchestration, not model quality.
SHORT = {
    "train.epochs": 1,
    "benchmark.providers": ["CPUExecutionProvider"],
    "benchmark.rounds": 2,
    "benchmark.iterations": 10,
    "benchmark.warmup": 2,
}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_stack(root: Path) -> dict[str, str]:
    """The stack on free ports; returns a client's environment."""
    ports = {name: str(free_port()) for name in ("PREFECT_PORT", "MLFLOW_PORT", "POSTGRES_PORT")}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    server_env = {**base, **ports, "BACKEND": "postgres", "STATE": str(root / "servers")}
    subprocess.run(
        ["bash", str(REPO / "deployments" / "start_servers.sh")],
        env=server_env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    credentials = {}
    for line in (root / "servers" / "credentials.env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        credentials[key] = value.strip("'")
    return {
        **base,
        **credentials,
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(root / "client-prefect"),
        "STATE": str(root / "servers"),
    }


def start_workers(env: dict[str, str], root: Path, count: int, tag: str) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        folder = root / f"worker-{tag}-{index}"
        folder.mkdir(parents=True)
        worker_env = {
            **env,
            "PREFECT_HOME": str(folder / "prefect"),
            "ONNXFORGE_HOME": str(folder / "state"),
        }
        command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"]
        with open(folder / "worker.log", "wb") as log:
            workers.append(
                subprocess.Popen(
                    [*command, "--name", f"{tag}-{index}"],
                    cwd=folder,
                    env=worker_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def fan_out(env: dict[str, str], root: Path, workers: int, tag: str) -> dict:
    """Every recipe's deployment once, at once; wall time until all are final."""
    code = f"""
import json, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from deployments.definitions import deployment_specs
started = time.monotonic()
ids = [run_deployment(f"onnx-pipeline/{{spec.name}}", timeout=0, as_subflow=False,
                      parameters={{**spec.parameters, "overrides": {SHORT!r}, "no_cache": True}}).id
       for spec in deployment_specs()]
states = {{}}
with get_client(sync_client=True) as client:
    while True:
        runs = [client.read_flow_run(i) for i in ids]
        if all(r.state.is_final() for r in runs):
            break
        time.sleep(2)
    states = {{r.name: r.state.type.value for r in runs}}
print(json.dumps({{"wall_s": time.monotonic() - started, "states": states}}))
"""
    pool_workers = start_workers(env, root, workers, tag)
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=7200,
        )
    finally:
        stop_workers(pool_workers)
    if result.returncode != 0:
        raise SystemExit(f"fan-out with {workers} worker(s) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def dispatch_overhead(env: dict[str, str], root: Path) -> dict:
    """The default recipe with its CPU benchmark on the pool; the run's dispatch metrics."""
    flow_dir = root / "dispatching-flow"
    flow_dir.mkdir()
    workers = start_workers(env, root, 1, "dispatch")
    try:
        subprocess.run(
            [str(BIN / "onnxforge"), "run", str(REPO / "configs" / "digits_cnn.yaml")]
            + ["--set", f"benchmark.pools.CPUExecutionProvider={POOL}"],
            cwd=flow_dir,
            env={**env, "ONNXFORGE_HOME": str(flow_dir / "state")},
            check=True,
            capture_output=True,
            timeout=3600,
        )
    finally:
        stop_workers(workers)
    code = """
import json, mlflow
metric = "metrics.`bench_dispatch.CPUExecutionProvider.wall_s`"
runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"{metric} > 0")
assert len(runs) == 1, f"expected the one dispatching run, found {len(runs)}"
row = runs.iloc[0]
print(json.dumps({k: float(row[f"metrics.bench_dispatch.CPUExecutionProvider.{k}"])
                  for k in ("wall_s", "measure_s")}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["overhead_s"] = figures["wall_s"] - figures["measure_s"]
    figures["wall_over_measure"] = figures["wall_s"] / figures["measure_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="onnxforge-fanout-"))
    root.chmod(0o755)  # as root, the cluster runs as the postgres user, which must enter it
    env = {**os.environ, "STATE": str(root / "servers")}  # for stop_servers.sh, should it fail
    try:
        env = start_stack(root)
        subprocess.run(
            [sys.executable, str(REPO / "deployments" / "deploy.py"), "--pool", POOL]
            + ["--concurrency-limit", "2"],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        # Not counted: after it every recipe has a champion, which each later run fetches,
        # scores and times too; without it the first phase alone would have less to do.
        warmup = fan_out(env, root, 2, "warmup")
        print(json.dumps({"warmup_workers": 2, **warmup}), flush=True)
        order = [n for i in range(args.repeats) for n in ((1, 2) if i % 2 == 0 else (2, 1))]
        walls: dict[int, list[float]] = {1: [], 2: []}
        for index, workers in enumerate(order):
            figure = fan_out(env, root, workers, f"w{workers}-{index}")
            walls[workers].append(figure["wall_s"])
            print(json.dumps({"fan_out_workers": workers, **figure}), flush=True)
        overhead = dispatch_overhead(env, root)
        print(json.dumps({"dispatch": overhead}), flush=True)
        summary = {
            "recipes": len(list((REPO / "configs").glob("*.yaml"))),
            "one_worker_s": walls[1],
            "two_workers_s": walls[2],
            "speedup_two_workers": [
                round(a / b, 2) for a, b in zip(walls[1], walls[2], strict=True)
            ],
            "dispatch_wall_s": round(overhead["wall_s"], 1),
            "dispatch_measure_s": round(overhead["measure_s"], 1),
            "dispatch_overhead_s": round(overhead["overhead_s"], 1),
        }
        print(json.dumps(summary))
    finally:
        subprocess.run(
            ["bash", str(REPO / "deployments" / "stop_servers.sh")], env=env, timeout=300
        )
        subprocess.run(["rm", "-rf", str(root)], timeout=300)


if __name__ == "__main__":
    main()
