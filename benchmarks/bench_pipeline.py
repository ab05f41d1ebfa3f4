"""Measure the benchmark goals of a recipe and print ratios measured in this one run.

    .venv/bin/python benchmarks/bench_pipeline.py [configs/digits_cnn.yaml] [--skip-overhead]

1. best passing variant against the framework baseline, per batch size (p50 speedup);
2. the harness's p50 against an independent plain loop of InferenceSession.run on the same file;
3. orchestration overhead: the whole flow's wall time against the sum of its task runs' own time,
   with the temporary Prefect server and with a running `prefect server start`, separately.
The machine is shared and noisy: compare numbers from one run, never across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def stage_rows(recipe_path: str, work: Path) -> tuple[list, list, dict]:
    """The run plan without Prefect: data, train, export, the variant chain, parity and the
    CPU rounds (onnxforge.pipeline.run_local)."""
    from onnxforge.benchmark import benchmark_inputs
    from onnxforge.pipeline import run_local
    from onnxforge.recipe import load_recipe

    recipe = load_recipe(recipe_path, {"benchmark.providers": "[CPUExecutionProvider]"})
    started = time.perf_counter()
    run = run_local(recipe, work)
    print(
        f"ran the plan in {time.perf_counter() - started:.1f} s, "
        f"test accuracy {run.trained.test_accuracy}"
    )
    for build in run.builds:
        print(
            f"  {build.variant}: "
            + (build.artifact.producer if build.artifact else f"NOT BUILT {build.reason}")
        )
    for result in run.parity:
        print(
            f"  parity {result.variant}: {'pass' if result.passed else 'FAIL'} acc {result.accuracy} "
            f"max err {result.max_abs_err} {[f.message for f in result.failures]}"
        )
    paths = {a.variant: a.path for a in run.artifacts}
    features = benchmark_inputs(run.data, work)  # written by the rounds already; same file
    return run.bench, run.parity, {"recipe": recipe, "paths": paths, "features": features}


PLAIN_LOOP = """
import sys, time, numpy as np, onnxruntime as ort
path, batch_file, threads, warmup, iterations = sys.argv[1:]
options = ort.SessionOptions()
if int(threads):
    options.intra_op_num_threads = int(threads)
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
arrays = dict(np.load(batch_file))
single = next(iter(arrays.values()))
feed = {i.name: arrays.get(i.name, single) for i in session.get_inputs()}
for _ in range(int(warmup)):
    session.run(None, feed)
timings = []
for _ in range(int(iterations)):
    started = time.perf_counter()
    session.run(None, feed)
    timings.append((time.perf_counter() - started) * 1000)
print(float(np.median(timings)))
"""


def plain_loop_p50(path: str, batch, threads: int | None, warmup: int, iterations: int) -> float:
    """An independent measurement: a bare InferenceSession.run loop in its own clean process."""
    from onnxforge.inputs import save

    with tempfile.TemporaryDirectory() as scratch:
        batch_file = f"{scratch}/batch.npz"
        save(batch, Path(batch_file))
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                PLAIN_LOOP,
                path,
                batch_file,
                str(threads or 0),
                str(warmup),
                str(iterations),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return float(result.stdout.strip())


def report_speed(rows: list, parity: list, info: dict) -> None:
    from onnxforge.benchmark import baseline_name

    recipe = info["recipe"]
    sizes = recipe.benchmark.batch_sizes
    baseline = baseline_name(recipe.model.framework)
    print(f"\n== {recipe.name}: best variant vs {baseline} (p50, CPU) ==")
    for size in sizes:
        base = next(r for r in rows if r.provider == "framework" and r.batch_size == size)
        onnx_rows = [
            r
            for r in rows
            if r.provider == "CPUExecutionProvider" and r.batch_size == size and r.status == "ok"
        ]
        best = min(onnx_rows, key=lambda r: r.p50_ms)
        print(
            f"bs{size}: {baseline} {base.p50_ms:.4f} ms, best {best.variant} {best.p50_ms:.4f} ms "
            f"-> {best.speedup:.2f}x faster"
        )
        for row in sorted(onnx_rows, key=lambda r: r.variant):
            print(f"    {row.variant:14s} {row.p50_ms:.4f} ms  {row.speedup:.2f}x  cv {row.cv:.2f}")
    accuracy = {p.variant: p.accuracy for p in parity if p.accuracy is not None}
    sizes_bytes = {a: Path(p).stat().st_size for a, p in info["paths"].items()}
    print(
        "file size vs fp32: "
        + ", ".join(
            f"{v} {sizes_bytes['fp32'] / s:.2f}x smaller" for v, s in sorted(sizes_bytes.items())
        )
    )
    source = parity[0].source_accuracy
    print(
        f"test accuracy: source {source:.4f}; "
        + ", ".join(
            f"{v} {a:.4f} ({(a - source) * 100:+.2f} pt)" for v, a in sorted(accuracy.items())
        )
    )

    print(
        "\n== harness p50 vs a plain InferenceSession.run loop (same file, threads, fresh processes) =="
    )
    compare_with_plain_loop(recipe, rows, info)


def compare_with_plain_loop(
    recipe, rows: list, info: dict, repeats: int = 3, iterations: int = 500
) -> None:
    """Alternate harness and plain loop `repeats` times on each batch size's best variant."""
    from onnxforge.benchmark import Contender, machine_lock_path, measure_interleaved, onnx_load
    from onnxforge.inputs import load, tile

    features = load(info["features"])
    spec = recipe.benchmark
    for size in spec.batch_sizes:
        best = min(
            (
                r
                for r in rows
                if r.provider == "CPUExecutionProvider"
                and r.batch_size == size
                and r.status == "ok"
            ),
            key=lambda r: r.p50_ms,
        )
        path = info["paths"][best.variant]
        one_round = spec.model_copy(
            update={"batch_sizes": [size], "rounds": 2, "iterations": iterations // 2}
        )
        load = onnx_load(path, "CPUExecutionProvider", one_round, Path(info["features"]))
        harness, plain = [], []
        for _ in range(repeats):
            (row,) = measure_interleaved(
                [Contender(best.variant, "run", load)],
                "CPUExecutionProvider",
                one_round,
                machine_lock_path(),
            )
            harness.append(row.p50_ms)
            plain.append(
                plain_loop_p50(
                    path,
                    tile(features, size),
                    spec.intra_op_threads,
                    spec.warmup,
                    iterations,
                )
            )
        ratio = float(np.median(harness) / np.median(plain))
        print(
            f"bs{size} {best.variant}: harness {[round(h, 4) for h in harness]} ms, "
            f"plain {[round(p, 4) for p in plain]} ms; median ratio {ratio:.3f} "
            f"({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} 10%)"
        )


def overhead_child(recipe_path: str) -> None:
    """Run the flow in this process; print its wall time and the sum of its task runs' time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.onnx_pipeline import onnx_pipeline

    started = time.perf_counter()
    state = onnx_pipeline(recipe_path=recipe_path, return_state=True)
    wall = time.perf_counter() - started

    async def stage_seconds() -> float:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
            return sum(run.total_run_time.total_seconds() for run in runs)

    print(json.dumps({"wall_s": wall, "stages_s": asyncio.run(stage_seconds())}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_child(recipe_path: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, recipe_path, "--overhead-child"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def report_overhead(recipe_path: str) -> None:
    print("\n== orchestration overhead: flow wall time vs sum of task run times ==")
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")
        }
        env.update(
            ONNXFORGE_HOME=f"{scratch}/state",
            PREFECT_HOME=f"{scratch}/prefect-temp",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        )
        Path(env["PREFECT_HOME"]).mkdir()
        temp = run_child(recipe_path, env)
        port = _free_port()
        server_env = {**env, "PREFECT_HOME": f"{scratch}/prefect-server"}
        Path(server_env["PREFECT_HOME"]).mkdir()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(f"http://127.0.0.1:{port}/api/health")
            running = run_child(
                recipe_path, {**server_env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    for name, numbers in (("temporary server", temp), ("running server", running)):
        print(
            f"{name:17s}: wall {numbers['wall_s']:.1f} s, stages {numbers['stages_s']:.1f} s, "
            f"overhead {numbers['wall_s'] - numbers['stages_s']:.1f} s "
            f"(wall / stages = {numbers['wall_s'] / numbers['stages_s']:.2f})"
        )


def _wait_for(url: str, timeout_s: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(REPO / "configs" / "digits_cnn.yaml"))
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--overhead-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.overhead_child:
        overhead_child(args.recipe)
        return
    with tempfile.TemporaryDirectory() as work:
        rows, parity, info = stage_rows(args.recipe, Path(work))
        report_speed(rows, parity, info)
    if not args.skip_overhead:
        report_overhead(args.recipe)


if __name__ == "__main__":
    main()
