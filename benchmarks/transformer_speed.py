"""The pipeline's best int8 variant of a BERT-small-shaped encoder against PyTorch eager, on the CPU.

    flock /tmp/onnxforge-heavy.lock .venv/bin/python benchmarks/transformer_speed.py [--quick]

1. Train (pipeline's train stage) a TokenTransformer with d_model 512, 8 heads, 4 layers, ff 2048
   on the generated token_majority task at sequence 128; export, simplify, ort-optimize and
   quantize it with the pipeline's own stages (onnxforge.variant_build.build_variant), plus the
   experiments: int8 from the fused graph (onnxscript's ORT fusions on the raw export), int8-static
   with `nodes_to_exclude` from the drift report, and ORT session options.
2. Time every contender in interleaved rounds (all contenders once per round, shuffled), the
   same intra-op thread count everywhere, one long-lived worker process per runtime build:
   the pinned onnxruntime (this venv), `onnxruntime-openvino` (`make install-openvino`: its CPU
   provider and its OpenVINOExecutionProvider), and any other `--runtime NAME=PYTHON`.
3. Score each quantized contender on the test split with the runtime that timed it.

A ratio is eager ms / contender ms within one round; the reported figure is the median over rounds,
[low, high] the range over rounds. The best variant is the fastest (geometric mean of the batch-1
and batch-16 ratios) int8 contender within 0.5 points of the source model's test accuracy. Its
last line is one JSON object: {"bs1", "bs16", "size_ratio", "accuracy_drop_pp", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORKER = Path(__file__).resolve().parent / "speed_worker.py"
OPENVINO_PYTHON = REPO / ".venv-openvino" / "bin" / "python"
MAX_DROP_PP = 0.5

RECIPE = """\
name: bert-small-speed
dataset: {{source: npz, path: {data}, features: x, labels: y, test_fraction: 0.25,
  val_fraction: 0.05, seed: 0}}
model:
  framework: pytorch
  architecture: token_transformer
  kwargs: {{vocab_size: 64, d_model: 512, heads: 8, layers: 4, ff: 2048}}
train: {{epochs: {epochs}, batch_size: 16, learning_rate: 0.00015, seed: 0, threads: 2}}
export: {{opset: 18, exporter: dynamo, dynamic_axes: {{0: batch, 1: sequence}}}}
variants:
  simplified: {{check_n: 1}}
  ort-optimized: {{level: extended, transformer_fusions: auto, num_heads: 8, hidden_size: 512}}
  int8-dynamic: {{weight_type: QInt8, per_channel: true}}
  int8-static: {{calibration: MinMax, samples: {calibration}, per_channel: true,
    activation_type: QUInt8, weight_type: QInt8}}
benchmark: {{providers: [CPUExecutionProvider], batch_sizes: [1, 16]}}
register: {{model_name: bert-small-speed,
  objective: {{metric: p50_ms, provider: CPUExecutionProvider, batch_size: 16}}}}
"""


def marker_majority(samples: int, seq_len: int = 128, vocab: int = 64, classes: int = 4):
    """Token ids and labels: which of `classes` marker tokens occurs most often in the sequence
    (each marker 0-7 times, the winner 1-3 more than the runner-up), the rest random tokens.

    token_majority (onnxforge/datasets.py) asks for counts by position against a decoy first half:
    at sequence 128 this encoder stayed at chance (25.0%) after one epoch (188 s on 2 cores);
    this task reaches ~90% in ~100 steps of 16, so the accuracy drop is measured on a model that
    learned something.
    """
    rng = np.random.default_rng(0)
    tokens = rng.integers(classes + 1, vocab, size=(samples, seq_len))
    labels = rng.integers(0, classes, size=samples)
    for row, label in enumerate(labels):
        counts = rng.integers(0, 8, size=classes)
        counts[label] = counts.max() + rng.integers(1, 4)
        slots = rng.permutation(seq_len)[: counts.sum()]
        tokens[row, slots] = np.repeat(np.arange(1, classes + 1), counts)
    return tokens, labels


def log(message: str) -> None:
    """Progress on stderr, so stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


def train_and_build(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The pipeline's stages, then the experiments; returns paths, sizes and the source accuracy."""
    from onnxforge.datasets import load_splits
    from onnxforge.recipe import load_recipe
    from onnxforge.training import train_model

    recipe_path = work / "recipe.yaml"
    data = work / "marker_majority.npz"
    tokens, labels = marker_majority(args.samples)
    np.savez(data, x=tokens, y=labels)
    text = RECIPE.format(data=data, epochs=args.epochs, calibration=args.calibration)
    recipe_path.write_text(text)
    recipe = load_recipe(recipe_path)
    splits = load_splits(recipe.dataset)
    state_file = work / "trained.json"
    if args.reuse and state_file.exists() and state_file.read_text().startswith("{"):
        trained = json.loads(state_file.read_text())
        log(f"reusing {trained['checkpoint']} (test accuracy {trained['test_accuracy']:.4f})")
    else:
        started = time.perf_counter()
        result = train_model(recipe, work, lambda epoch, m: log(f"  epoch {epoch}: {m}"))
        trained = {"checkpoint": result.checkpoint, "test_accuracy": result.test_accuracy}
        state_file.write_text(json.dumps(trained))
        log(
            f"trained in {time.perf_counter() - started:.0f} s: test accuracy {result.test_accuracy}"
        )
    built_file = work / "built.json"
    if args.reuse and built_file.exists():
        files = json.loads(built_file.read_text())
        log(f"reusing the variants listed in {built_file}")
    else:
        with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress
            files = build_all(recipe, trained["checkpoint"], splits, work, args)
        built_file.write_text(json.dumps(files))
    return {
        "recipe": str(recipe_path),
        "checkpoint": trained["checkpoint"],
        "source_accuracy": trained["test_accuracy"],
        "files": files,
        "test": splits.x_test[: args.test_samples],
        "labels": splits.y_test[: args.test_samples],
    }


def build_all(recipe: Any, checkpoint: str, splits: Any, work: Path, args: Any) -> dict:
    """Export and the recipe's variants with the pipeline's stages, then the experiments."""
    from onnxforge.export import export_model
    from onnxforge.records import VariantBuild, parent_for
    from onnxforge.variant_build import build_variant

    started = time.perf_counter()
    builds = [VariantBuild(variant="fp32", artifact=export_model(recipe, checkpoint, work))]
    for name, settings in recipe.requested_variants():
        builds.append(build_variant(name, parent_for(name, builds), settings, work, splits.x_train))
    files = {}
    for build in builds:
        log(f"  {build.variant}: {build.artifact.producer if build.artifact else build.reason}")
        if build.artifact:
            files[build.variant] = build.artifact.path
    files.update(experiments(recipe, builds, splits, work, args))
    log(f"variants built in {time.perf_counter() - started:.0f} s")
    return files


def experiments(
    recipe: Any, builds: list, splits: Any, work: Path, args: argparse.Namespace
) -> dict:
    """int8 from the fused graph, and int8-static without the layers the drift report names."""
    from onnxforge.drift import drifting_layers
    from onnxforge.records import describe_onnx
    from onnxforge.variant_build import build_variant
    from onnxforge.variants.ort_optimized import ATTENTION_OPS, fused_ops

    files: dict[str, str] = {}
    by_name = {b.variant: b.artifact for b in builds if b.artifact}
    optimized = by_name.get("ort-optimized")
    if optimized and ATTENTION_OPS & set(fused_ops(Path(optimized.path))):
        parents = {"ort-optimized": optimized}  # the pipeline's fused graph
    else:  # ort-optimized failed or fused no attention: onnxscript's fusions, here
        fused = fuse_for_ort(Path(by_name["fp32"].path), work / "fused.onnx")
        files["fused"] = str(fused)
        parents = {"fused": describe_onnx(fused, "ort-optimized", "fp32", "optimize_for_ort")}
    for tag, parent in parents.items():
        out = work / f"from-{tag}"
        out.mkdir(exist_ok=True)
        for variant in ("int8-dynamic", "int8-static"):
            settings = getattr(recipe.variants, variant.replace("-", "_"))
            if "source" in type(settings).model_fields and tag == "ort-optimized":
                settings = settings.model_copy(update={"source": "ort-optimized"})
            build = build_variant(variant, parent, settings, out, splits.x_train)
            made = build.artifact.producer if build.artifact else build.reason
            log(f"  {variant} from {tag}: {made}")
            if build.artifact:
                files[f"{variant}+{tag}"] = build.artifact.path
    static = recipe.variants.int8_static
    if "simplified" not in by_name:
        return files
    exclusions = {"matmul-only": non_matmul_nodes(Path(by_name["simplified"].path))}
    if "int8-static" in by_name and args.exclude:
        drift = drifting_layers(
            by_name["simplified"].path,
            by_name["int8-static"].path,
            splits.x_train[:8],
            top=args.exclude,
        )
        log(f"  drift report (lowest SQNR, dB): {[(d.node, round(d.sqnr_db, 1)) for d in drift]}")
        exclusions["exclude"] = [layer.node for layer in drift]
    for tag, nodes in exclusions.items():
        out = work / tag
        out.mkdir(exist_ok=True)
        settings = static.model_copy(update={"nodes_to_exclude": nodes})
        build = build_variant("int8-static", by_name["simplified"], settings, out, splits.x_train)
        log(f"  int8-static+{tag} ({len(nodes)} nodes excluded): {build.status}")
        if build.artifact:
            files[f"int8-static+{tag}"] = build.artifact.path
    return files


def non_matmul_nodes(path: Path) -> list[str]:
    """Every node but MatMul and Gemm: as `nodes_to_exclude`, only the weights' GEMMs get QDQ
    (LayerNormalization, Softmax and Add stay float, with no Q/DQ pairs around them)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type not in ("MatMul", "Gemm")]


def fuse_for_ort(source: Path, target: Path) -> Path:
    """onnxscript's ORT transformer fusions (MultiHeadAttention, SkipLayerNormalization) on the
    raw export: after onnxsim the attention pattern no longer matches."""
    import onnx_ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = onnx_ir.load(str(source))
    fused, report = optimize_for_ort(model)
    onnx_ir.save(fused, str(target))
    log(f"  fused: {report}")
    return target


def contenders(runtimes: dict[str, str], files: dict[str, str], quick: bool) -> dict[str, list]:
    """Per runtime build, the contenders it runs: (name, file, provider, session settings)."""
    ints = [name for name in files if name.startswith("int8")]
    pinned = [("fp32", "simplified", {}), ("ort-optimized", "ort-optimized", {})]
    pinned += [(name, name, {}) for name in ints]
    if not quick:  # session options, on the pinned build only
        no_sln = {"disabled_optimizers": ["SkipLayerNormFusion"]}
        denormal = {"session_config": {"session.set_denormal_as_zero": 1}}
        pinned.append(("int8-dynamic[no-SkipLayerNormFusion]", "int8-dynamic", no_sln))
        pinned.append(("int8-dynamic[denormal-as-zero]", "int8-dynamic", denormal))
        pinned.append(("int8-static[denormal-as-zero]", "int8-static", denormal))
    plan: dict[str, list] = {"torch": [("eager", None, {"kind": "torch"})]}
    # other builds: the pipeline's own variants (its exclusion experiments run on the pinned one)
    others = ["fp32", *(n for n in ints if "+" not in n or "+ort-optimized" in n)]
    for runtime in runtimes:
        cpu = [
            (f"{runtime}:{n}", files[f], {"provider": "CPUExecutionProvider", **o})
            for n, f, o in pinned
            if f in files and (runtime == "pinned" or n in others)
        ]
        if runtime == "openvino":
            ov = {
                "provider": "OpenVINOExecutionProvider",
                "provider_options": {"device_type": "CPU"},
            }
            # ort-optimized's fused ops are ONNX Runtime's (com.microsoft), not OpenVINO's
            for name in ["simplified", *(n for n in ints if "+" not in n or "matmul-only" in n)]:
                label = "fp32" if name == "simplified" else name
                cpu.append((f"openvino-ep:{label}", files[name], ov))
        plan[runtime] = cpu
    return plan


class Worker:
    """One runtime build's worker process (see speed_worker.py)."""

    def __init__(self, python: str, config: dict, config_file: Path) -> None:
        config_file.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [python, str(WORKER), str(config_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.hello = self.read()

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.process.args} exited ({self.process.wait()})")
        return json.loads(line)

    def send(self, **command: Any) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def ask(self, **command: Any) -> dict:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        self.process.stdin.write('{"cmd": "quit"}\n')
        self.process.stdin.close()
        self.process.wait(timeout=60)


def start_workers(plan: dict, runtimes: dict, built: dict, work: Path, threads: int) -> dict:
    """A fresh process per runtime build, each holding its contenders' sessions."""
    inputs = work / "inputs.npz"
    tokens = built["test"]
    np.savez(inputs, batch1=tokens[:1], batch16=tokens[:16], test=tokens)
    workers = {}
    pythons = {"torch": sys.executable, **runtimes}
    for runtime, entries in plan.items():
        specs = []
        for name, path, options in entries:
            spec = {"name": name, "path": path, "kind": "ort", "scratch": str(work), **options}
            if spec["kind"] == "torch":
                spec.update(repo=str(REPO), recipe=built["recipe"], checkpoint=built["checkpoint"])
            specs.append(spec)
        config = {"threads": threads, "inputs": str(inputs), "contenders": specs}
        workers[runtime] = Worker(pythons[runtime], config, work / f"worker-{runtime}.json")
        for name, reason in workers[runtime].hello["failed"].items():
            log(f"  {name}: NOT RUN ({reason})")
    return workers


def timed_rounds(workers: dict, batch_sizes: list[int], rounds: int, runs: int) -> dict:
    """{(contender, batch): [median ms of each round]}, contenders shuffled within each round."""
    order = [(w, name) for w, worker in workers.items() for name in worker.hello["ready"]]
    per_round: dict[tuple[str, int], list[float]] = {}
    shuffle = random.Random(0)
    for index in range(rounds):
        started = time.perf_counter()
        for batch in batch_sizes:
            shuffle.shuffle(order)
            for runtime, name in order:
                times = workers[runtime].ask(cmd="time", name=name, batch=batch, runs=runs)["ms"]
                per_round.setdefault((name, batch), []).append(statistics.median(times))
        log(f"  round {index + 1}/{rounds}: {time.perf_counter() - started:.0f} s")
    return per_round


def summary(per_round: dict, batch_sizes: list[int]) -> dict:
    """Median ms and range over rounds; per-round ratio to eager, median and range."""
    table: dict[str, dict] = {}
    for (name, batch), values in per_round.items():
        eager = per_round[("eager", batch)]
        ratios = [e / v for e, v in zip(eager, values, strict=True)]
        table.setdefault(name, {})[batch] = {
            "ms": statistics.median(values),
            "ms_range": (min(values), max(values)),
            "ratio": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios)),
        }
    return table


def accuracies(workers: dict, built: dict, names: list[str]) -> dict[str, float]:
    """Test-split accuracy of each named contender, with the runtime that timed it (the workers
    predict concurrently: nothing is timed here)."""
    owner = {name: w for w, worker in workers.items() for name in worker.hello["ready"]}
    queues = {w: [n for n in names if owner.get(n) == w] for w in workers}
    labels = np.asarray(built["labels"])
    scores = {}
    while any(queues.values()):
        asked = {w: queue.pop(0) for w, queue in queues.items() if queue}
        for runtime, name in asked.items():
            workers[runtime].send(cmd="predict", name=name)
        for runtime, name in asked.items():
            predicted = np.asarray(workers[runtime].read()["argmax"])
            scores[name] = float((predicted == labels).mean())
    return scores


def size_of(path: str) -> int:
    """Bytes on disk, external data included."""
    from onnxforge.records import onnx_size_bytes

    return onnx_size_bytes(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / ".onnxforge" / "transformer-speed"))
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the checkpoint and variants in --work"
    )
    parser.add_argument("--samples", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--test-samples", type=int, default=600)
    parser.add_argument(
        "--exclude", type=int, default=4, help="layers from the drift report (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per contender per round")
    parser.add_argument("--quick", action="store_true", help="fewer contenders, 2 rounds")
    parser.add_argument("--profile", action="store_true", help="ORT per-op profile of int8 files")
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help="another runtime build's python (default: openvino=.venv-openvino/bin/python)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    runtimes = {"pinned": sys.executable}
    if OPENVINO_PYTHON.exists():
        runtimes["openvino"] = str(OPENVINO_PYTHON)
    runtimes.update(dict(item.split("=", 1) for item in args.runtime))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    built = train_and_build(args, work)
    plan = contenders(runtimes, built["files"], args.quick)
    workers = start_workers(plan, runtimes, built, work, args.threads)
    try:
        report(workers, built, args, work)
    finally:
        for worker in workers.values():
            worker.close()


def report(workers: dict, built: dict, args: argparse.Namespace, work: Path) -> None:
    """Builds, timings, accuracies, the best variant; the last line is the JSON summary."""
    builds = {}
    for runtime, worker in workers.items():
        if runtime != "torch":
            info = worker.ask(cmd="info")
            builds[runtime] = f"{info['package']} {info['onnxruntime']}"
            print(f"runtime {runtime}: {builds[runtime]} {info['providers']}")
            print(f"    {info['build_info']}")
    print(f"cpu: {info['cpu']}; {info['flags']}")
    batch_sizes = [1, 16]
    table = summary(timed_rounds(workers, batch_sizes, args.rounds, args.runs), batch_sizes)
    quantized = [name for name in table if "int8" in name]
    # a contender in [brackets] runs its base's file with other session settings: scored once
    named = [n for n in table if "[" not in n and ("int8" in n or "openvino-ep" in n)]
    scores = accuracies(workers, built, ["eager", *named])
    scores.update({n: scores[n.split("[")[0]] for n in table if n.split("[")[0] in scores})
    source = scores["eager"]  # the source model on the same samples (the pipeline's stage agrees)
    sizes = {name: size_of(path) for name, path in built["files"].items()}
    print(
        f"\nsource (PyTorch eager) test accuracy {source:.4f} on {len(built['labels'])} samples "
        f"(train stage's test_accuracy {built['source_accuracy']:.4f})"
    )
    print(
        f"threads {args.threads}, {args.rounds} rounds x {args.runs} runs; ms: median [range over rounds]"
    )
    print(f"{'contender':44s} {'bs1 ms':>20s} {'bs1 x':>17s} {'bs16 ms':>22s} {'bs16 x':>17s}  acc")
    for name in sorted(table, key=lambda n: -table[n][16]["ratio"]):
        cells = []
        for batch in batch_sizes:
            row = table[name][batch]
            cells.append(f"{row['ms']:7.2f} [{row['ms_range'][0]:.1f}-{row['ms_range'][1]:.1f}]")
            cells.append(
                f"{row['ratio']:5.2f} [{row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}]"
            )
        acc = f"{scores[name]:.4f}" if name in scores else "-"
        print(f"{name:44s} {cells[0]:>20s} {cells[1]:>17s} {cells[2]:>22s} {cells[3]:>17s}  {acc}")
    fp32_bytes = sizes["fp32"]
    print("\nfile sizes: " + ", ".join(f"{n} {s / 1e6:.1f} MB" for n, s in sorted(sizes.items())))
    eligible = [
        name
        for name in quantized
        if name in scores and (source - scores[name]) * 100 <= MAX_DROP_PP
    ]
    if args.profile:
        profile(workers, built)
    best = max(eligible, key=lambda n: table[n][1]["ratio"] * table[n][16]["ratio"], default=None)
    if best is None:
        print(json.dumps({"bs1": None, "bs16": None, "size_ratio": None, "accuracy_drop_pp": None}))
        return
    variant = best.split(":", 1)[1].split("[", 1)[0]
    summary_line = {
        "bs1": round(table[best][1]["ratio"], 2),
        "bs16": round(table[best][16]["ratio"], 2),
        "size_ratio": round(fp32_bytes / sizes[variant], 2),
        "accuracy_drop_pp": round((source - scores[best]) * 100, 2),
        "variant": best,
        "runtime": runtime_of(best, builds),
        "bs1_range": [round(x, 2) for x in table[best][1]["ratio_range"]],
        "bs16_range": [round(x, 2) for x in table[best][16]["ratio_range"]],
    }
    print(f"\nbest: {best} ({built['files'][variant]})")
    print(json.dumps(summary_line))


def runtime_of(contender: str, builds: dict[str, str]) -> str:
    """The runtime build and provider a contender ran on."""
    prefix = contender.split(":", 1)[0]
    if prefix == "openvino-ep":
        return f"{builds['openvino']} OpenVINOExecutionProvider"
    return f"{builds[prefix]} CPUExecutionProvider"


def profile(workers: dict, built: dict) -> None:
    """Per-op kernel time of the int8 files under each CPU build, batch 16 (ORT profiler)."""
    for worker in workers.values():
        for name in worker.hello["ready"]:
            if name.endswith(("int8-dynamic", "int8-static")) and "openvino-ep" not in name:
                ops = worker.ask(cmd="profile", name=name, batch=16, runs=3)["ops_ms"]
                top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:8])
                print(f"profile {name} bs16 (ms/run): {top}")


if __name__ == "__main__":
    main()
