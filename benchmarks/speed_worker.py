"""One runtime build's side of benchmarks/transformer_speed.py: a long-lived process that holds
its contenders (ONNX Runtime sessions, or the PyTorch source model) and answers commands, so the
coordinator can interleave rounds across runtime builds that cannot share a Python environment
(`onnxruntime` and `onnxruntime-openvino` both install the `onnxruntime` module).

    <venv>/bin/python benchmarks/speed_worker.py CONFIG.json

Needs only numpy and the runtime (onnxruntime of any build; torch and onnxforge for `torch`
contenders). Reads one JSON command per line on stdin, writes one JSON answer per line on stdout:

    {"cmd": "info"}                                   -> build info, providers, CPU kernels
    {"cmd": "time", "name": N, "batch": B, "runs": R} -> R wall times in ms (after one warm-up)
    {"cmd": "predict", "name": N}                     -> argmax of the first output on the test set
    {"cmd": "profile", "name": N, "batch": B, "runs": R} -> ms per op type (ORT profiler)
    {"cmd": "quit"}
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def ort_session(spec: dict, threads: int, profile: bool = False) -> Any:
    """An InferenceSession on one provider, with the contender's session config entries."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = spec.get("graph_optimization_level")
    if level:
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in spec.get("session_config", {}).items():
        options.add_session_config_entry(key, str(value))
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(spec["scratch"]) / f"profile-{spec['name']}")
    provider = spec["provider"]
    provider_options = dict(spec.get("provider_options", {}))
    if provider == "OpenVINOExecutionProvider":
        provider_options.setdefault("num_of_threads", str(threads))
    session = ort.InferenceSession(
        spec["path"],
        sess_options=options,
        providers=[(provider, provider_options)],
        disabled_optimizers=spec.get("disabled_optimizers") or None,
    )
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} fell back to {session.get_providers()[0]}")
    return session


def torch_model(spec: dict, threads: int) -> Any:
    """The source model rebuilt from the pipeline's checkpoint, as the flow's baseline does."""
    import torch

    sys.path.insert(0, spec["repo"])
    from onnxforge.datasets import load_splits
    from onnxforge.recipe import load_recipe
    from onnxforge.training import load_source_model

    torch.set_num_threads(threads)
    recipe = load_recipe(spec["recipe"])
    return load_source_model(recipe, spec["checkpoint"], load_splits(recipe.dataset))


def runner(spec: dict, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """tokens -> first output, for one contender."""
    if spec["kind"] == "torch":
        import torch

        model = torch_model(spec, threads)

        def run_torch(tokens: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(tokens)).numpy()

        return run_torch
    session = ort_session(spec, threads)
    name = session.get_inputs()[0].name

    def run_ort(tokens: np.ndarray) -> np.ndarray:
        return session.run(None, {name: tokens})[0]

    return run_ort


def cpu_kernels() -> dict[str, Any]:
    """The CPU features MLAS dispatches on (cpuid via /proc/cpuinfo) and ORT's view of them."""
    flags: set[str] = set()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
    wanted = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8"]
    wanted += ["avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return {"cpu": model, "flags": {flag: flag in flags for flag in wanted}}


def profile_ops(spec: dict, batch: np.ndarray, runs: int, threads: int) -> dict[str, float]:
    """Mean ms per run spent in each op type (kernel time), from ORT's profiler."""
    session = ort_session(spec, threads, profile=True)
    name = session.get_inputs()[0].name
    for _ in range(runs + 1):
        session.run(None, {name: batch})
    trace = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = f"{event['args'].get('op_name', '?')}@{event['args'].get('provider', '?')}"
            totals[key] = totals.get(key, 0.0) + event["dur"] / 1000 / (runs + 1)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    threads = config["threads"]
    data = np.load(config["inputs"])
    batches = {int(key[5:]): data[key] for key in data.files if key.startswith("batch")}
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    failed: dict[str, str] = {}
    specs = {spec["name"]: spec for spec in config["contenders"]}
    for spec in config["contenders"]:
        try:
            runners[spec["name"]] = runner(spec, threads)
        except Exception as error:  # noqa: BLE001 - a contender a build cannot run is a result
            failed[spec["name"]] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    print(json.dumps({"ready": sorted(runners), "failed": failed}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            return
        if command["cmd"] == "info":
            answer: dict[str, Any] = cpu_kernels()
            try:
                from importlib.metadata import PackageNotFoundError, version

                import onnxruntime as ort

                answer["onnxruntime"] = ort.__version__
                answer["package"] = "onnxruntime"
                for package in ("onnxruntime-openvino", "onnxruntime-gpu", "onnxruntime"):
                    try:
                        version(package)
                    except PackageNotFoundError:
                        continue
                    answer["package"] = package
                    break
                answer["providers"] = ort.get_available_providers()
                answer["build_info"] = ort.capi._pybind_state.get_build_info()
            except ImportError:
                answer["onnxruntime"] = None
            print(json.dumps(answer), flush=True)
        elif command["cmd"] == "time":
            run, batch = runners[command["name"]], batches[command["batch"]]
            run(batch)  # one warm-up per round: caches and branch predictors after a switch
            times = []
            for _ in range(command["runs"]):
                started = time.perf_counter()
                run(batch)
                times.append((time.perf_counter() - started) * 1000)
            print(json.dumps({"ms": times}), flush=True)
        elif command["cmd"] == "predict":
            # batches of 16, the last one padded: a shape the contender has already run
            run, tokens = runners[command["name"]], data["test"]
            padded = np.concatenate([tokens, tokens[: -len(tokens) % 16]])
            chunks = [run(padded[i : i + 16]) for i in range(0, len(padded), 16)]
            argmax = np.concatenate(chunks)[: len(tokens)].argmax(1)
            print(json.dumps({"argmax": argmax.tolist()}), flush=True)
        elif command["cmd"] == "profile":
            ops = profile_ops(
                specs[command["name"]], batches[command["batch"]], command["runs"], threads
            )
            print(json.dumps({"ops_ms": ops}), flush=True)


if __name__ == "__main__":
    main()
