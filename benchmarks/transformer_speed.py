"""The pipeline's best int8 variant of a BERT-small-shaped encoder against PyTorch eager, on the CPU.

    flock /tmp/onnxforge-heavy.lock .venv/bin/python benchmarks/transformer_speed.py [--quick]

1. The run plan (onnxforge.pipeline) without Prefect: data, train a TokenTransformer with d_model
   512, 8 heads, 4 layers, ff 2048 on a marker-majority task at sequence 128, export, simplify,
   ort-optimize and quantize; then the experiments: int8 from onnxscript's fused graph, int8-static
   with `nodes_to_exclude` from the drift report or on MatMul/Gemm only.
2. Time every contender with the pipeline's own harness (onnxforge.benchmark.measure_interleaved):
   one fresh process per contender, interleaved rounds, the same intra-op threads everywhere, the
   machine lock. Contenders run on the pinned onnxruntime (this venv), with session settings
   (onnxforge.runtime.SETTING_KEYS, e.g. SkipLayerNormFusion disabled), and in other runtime
   builds by interpreter: `onnxruntime-openvino` (`make install-openvino`: its CPU provider and its
   OpenVINOExecutionProvider) and any `--runtime NAME=PYTHON`.
3. Score each int8 contender on the test split in the runtime build and session that timed it.

A ratio is PyTorch eager p50 / contender p50 within one round; the figure is the median over
rounds with a 95% bootstrap interval over rounds (onnxforge.rounds), as the flow reports it. The
best variant is the fastest (geometric mean of the batch-1 and batch-16 ratios) int8 contender
within 0.5 points of the source model's test accuracy. Its last line is one JSON object:
{"bs1", "bs16", "size_ratio", "accuracy_drop_pp", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
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
    """The run plan's stages, then the experiments; the recipe, data, training and files."""
    from onnxforge import pipeline
    from onnxforge.recipe import load_recipe
    from onnxforge.records import TrainResult

    data_file = work / "marker_majority.npz"
    tokens, labels = marker_majority(args.samples)
    np.savez(data_file, x=tokens, y=labels)
    recipe_path = work / "recipe.yaml"
    text = RECIPE.format(data=data_file, epochs=args.epochs, calibration=args.calibration)
    recipe_path.write_text(text)
    recipe = load_recipe(recipe_path)
    data = pipeline.prepare_data(recipe, work)
    state_file = work / "trained.json"
    if args.reuse and state_file.exists():
        trained = TrainResult.model_validate_json(state_file.read_text())
        log(f"reusing {trained.checkpoint} (test accuracy {trained.test_accuracy:.4f})")
    else:
        started = time.perf_counter()
        trained = pipeline.train(recipe, data, work, lambda e, m: log(f"  epoch {e}: {m}"))
        state_file.write_text(trained.model_dump_json())
        log(f"trained in {time.perf_counter() - started:.0f} s: accuracy {trained.test_accuracy}")
    built_file = work / "built.json"
    if args.reuse and built_file.exists():
        files = json.loads(built_file.read_text())
        log(f"reusing the variants listed in {built_file}")
    else:
        with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress
            files = build_all(recipe, trained, data, work, args)
        built_file.write_text(json.dumps(files))
    return {"recipe": recipe, "data": data, "trained": trained, "files": files}


def build_all(recipe: Any, trained: Any, data: Any, work: Path, args: Any) -> dict[str, str]:
    """Export and the recipe's variant chain with the run plan, then the experiments."""
    from onnxforge import pipeline

    started = time.perf_counter()
    fp32 = pipeline.export(recipe, trained, data, work)
    builds = pipeline.build_chain(
        recipe, fp32, lambda name, parent: pipeline.make_variant(recipe, name, parent, data, work)
    )
    files = {}
    for build in builds:
        log(f"  {build.variant}: {build.artifact.producer if build.artifact else build.reason}")
        if build.artifact:
            files[build.variant] = build.artifact.path
    files.update(experiments(recipe, builds, data, work, args))
    log(f"variants built in {time.perf_counter() - started:.0f} s")
    return files


def experiments(
    recipe: Any, builds: list, data: Any, work: Path, args: argparse.Namespace
) -> dict[str, str]:
    """int8 from the fused graph, and int8-static without the layers the drift report names."""
    from onnxforge.data_record import read_splits
    from onnxforge.drift import drifting_layers
    from onnxforge.onnx_files import describe_onnx
    from onnxforge.variant_build import build_variant
    from onnxforge.variants.ort_optimized import ATTENTION_OPS, fused_ops

    calibration = read_splits(data).x_train
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
            build = build_variant(variant, parent, settings, out, calibration)
            log(
                f"  {variant} from {tag}: {build.artifact.producer if build.artifact else build.reason}"
            )
            if build.artifact:
                files[f"{variant}+{tag}"] = build.artifact.path
    if "simplified" not in by_name:
        return files
    exclusions = {"matmul-only": non_matmul_nodes(Path(by_name["simplified"].path))}
    if "int8-static" in by_name and args.exclude:
        drift = drifting_layers(
            by_name["simplified"].path,
            by_name["int8-static"].path,
            calibration[:8],
            top=args.exclude,
        )
        log(f"  drift report (lowest SQNR, dB): {[(d.node, round(d.sqnr_db, 1)) for d in drift]}")
        exclusions["exclude"] = [layer.node for layer in drift]
    for tag, nodes in exclusions.items():
        out = work / tag
        out.mkdir(exist_ok=True)
        settings = recipe.variants.int8_static.model_copy(update={"nodes_to_exclude": nodes})
        build = build_variant("int8-static", by_name["simplified"], settings, out, calibration)
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


# (label, file, provider, session settings) per runtime build; the baseline is added apart.
def plan(runtimes: dict[str, str], files: dict[str, str], quick: bool, threads: int) -> list:
    """Every ONNX contender: its row name, interpreter, file, provider and session settings."""
    cpu = "CPUExecutionProvider"
    ints = [name for name in files if name.startswith("int8")]
    pinned = [("fp32", "simplified", {}), ("ort-optimized", "ort-optimized", {})]
    pinned += [(name, name, {}) for name in ints]
    if not quick:  # session settings, on the pinned build only
        no_sln = {"disabled_optimizers": ["SkipLayerNormFusion"]}
        denormal = {"session_config": {"session.set_denormal_as_zero": 1}}
        pinned.append(("int8-dynamic[no-SkipLayerNormFusion]", "int8-dynamic", no_sln))
        pinned.append(("int8-static[no-SkipLayerNormFusion]", "int8-static", no_sln))
        pinned.append(("int8-dynamic[denormal-as-zero]", "int8-dynamic", denormal))
    # other builds: the pipeline's own variants (its exclusion experiments run on the pinned one)
    others = ["fp32", *(n for n in ints if "+" not in n or "+ort-optimized" in n)]
    entries = []
    for runtime, python in runtimes.items():
        for name, file, settings in pinned:
            if file in files and (runtime == "pinned" or name in others):
                entries.append((f"{runtime}:{name}", python, files[file], cpu, settings))
        if runtime == "openvino":
            ov = {"provider_options": {"device_type": "CPU", "num_of_threads": str(threads)}}
            # ort-optimized's fused ops are ONNX Runtime's (com.microsoft), not OpenVINO's
            for name in ["simplified", *(n for n in ints if "+" not in n or "matmul-only" in n)]:
                label = "fp32" if name == "simplified" else name
                entry = (
                    f"openvino-ep:{label}",
                    python,
                    files[name],
                    "OpenVINOExecutionProvider",
                    ov,
                )
                entries.append(entry)
    return entries


def contenders(built: dict, entries: list, spec: Any, features: Path) -> list:
    """The harness's Contenders: PyTorch eager (the flow's framework baseline), then the rest."""
    from onnxforge.benchmark import (
        Contender,
        baseline_name,
        common_load,
        framework_baseline,
        onnx_load,
    )
    from onnxforge.onnx_files import onnx_size_bytes

    recipe = built["recipe"]
    load = framework_baseline(recipe.to_data(), built["trained"].checkpoint, built["data"])
    baseline = Contender(
        baseline_name(recipe.model.framework),
        "framework",
        {**load, **common_load(spec, features)},
    )
    onnx = [
        Contender(
            label,
            "run",
            onnx_load(path, provider, spec, features, settings),
            onnx_size_bytes(path),
            python,
        )
        for label, python, path, provider, settings in entries
    ]
    return [baseline, *onnx]


def accuracies(runnable: list, built: dict, work: Path, limit: int) -> dict[str, float]:
    """Test-split accuracy of each contender, scored in the runtime build and session that
    timed it; the source model's on the same samples under "source"."""
    from onnxforge.adapters import get_adapter
    from onnxforge.benchmark import contender_argmax
    from onnxforge.data_record import read_splits
    from onnxforge.inputs import save
    from onnxforge.training import load_source_model

    splits = read_splits(built["data"])
    tokens, labels = splits.x_test[:limit], np.asarray(splits.y_test[:limit])
    features = work / "score_features.npz"
    save(tokens, features)
    scores = {}
    for contender in runnable:
        if contender.source == "run":
            predicted = np.asarray(contender_argmax(contender, features, 16))
            scores[contender.label] = float((predicted == labels).mean())
    recipe = built["recipe"]
    model = load_source_model(recipe, built["trained"].checkpoint, splits)
    reference = get_adapter(recipe.model.framework).predict(model, tokens)
    scores["source"] = float((np.asarray(reference[0]).argmax(1) == labels).mean())
    return scores


def build_of(python: str) -> str:
    """The onnxruntime distribution and version an interpreter imports, and its CPU."""
    code = (
        "import json, importlib.metadata as m, onnxruntime as o\n"
        "names = [d.metadata['Name'] for d in m.distributions()]\n"
        "pkg = next(n for n in names if n and n.lower().startswith('onnxruntime'))\n"
        "print(json.dumps([pkg, o.__version__, o.get_available_providers()]))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    package, version, providers = json.loads(out.stdout)
    return f"{package} {version} {providers}"


def cpu_line() -> str:
    """`lscpu`'s model name and the flags MLAS dispatches on: a figure is for this CPU only."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?"
    )
    flags = next(
        (set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set()
    )
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]
    return f"{model}; " + ", ".join(f"{f}{'+' if f in flags else '-'}" for f in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / ".onnxforge" / "transformer-speed"))
    parser.add_argument("--reuse", action="store_true", help="reuse the checkpoint and variants")
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
    report(built, runtimes, args, work)


def report(built: dict, runtimes: dict[str, str], args: argparse.Namespace, work: Path) -> None:
    """Time, score and print; the last line is the JSON summary."""
    from onnxforge.benchmark import benchmark_inputs, machine_lock_path, measure_interleaved
    from onnxforge.rounds import with_speedups

    builds = {name: build_of(python) for name, python in runtimes.items()}
    for name, line in builds.items():
        print(f"runtime {name}: {line}")
    print(f"cpu: {cpu_line()}")
    spec = built["recipe"].benchmark.model_copy(
        update={
            "batch_sizes": [1, 16],
            "rounds": args.rounds,
            "iterations": args.runs,
            "warmup": 1,
            "intra_op_threads": args.threads,
        }
    )
    features = benchmark_inputs(built["data"], work)
    entries = plan(runtimes, built["files"], args.quick, args.threads)
    everyone = contenders(built, entries, spec, features)
    rows = measure_interleaved(everyone, "CPUExecutionProvider", spec, machine_lock_path())
    rows = with_speedups(rows)
    failed = {r.variant: r.reason for r in rows if r.status != "ok"}
    for label, reason in failed.items():
        print(f"  {label}: NOT RUN ({reason})")
    ok = {(r.variant, r.batch_size): r for r in rows if r.status == "ok"}
    runnable = [c for c in everyone if c.label not in failed]
    scores = accuracies(runnable, built, work, args.test_samples)
    source = scores["source"]
    print(
        f"\nsource (PyTorch eager) test accuracy {source:.4f} on {args.test_samples} samples; "
        f"threads {args.threads}, {args.rounds} rounds x {args.runs} runs; "
        "x: eager p50 / contender p50, median over rounds [95% bootstrap interval]"
    )
    labels = [c.label for c in runnable if c.source == "run"]
    for label in sorted(labels, key=lambda n: -(ok[(n, 16)].speedup or 0)):
        cells = [
            f"bs{b} {ok[(label, b)].p50_ms:7.2f} ms {ok[(label, b)].speedup:5.2f}x "
            f"[{ok[(label, b)].speedup_low:.2f}, {ok[(label, b)].speedup_high:.2f}]"
            for b in (1, 16)
        ]
        print(f"{label:44s} {cells[0]:>34s} {cells[1]:>34s}  acc {scores[label]:.4f}")
    sizes = {c.label: c.size_bytes for c in runnable if c.source == "run"}
    fp32_bytes = sizes["pinned:fp32"]
    eligible = [n for n in labels if "int8" in n and (source - scores[n]) * 100 <= MAX_DROP_PP]
    best = max(eligible, key=lambda n: ok[(n, 1)].speedup * ok[(n, 16)].speedup, default=None)
    if best is None:
        print(json.dumps({"bs1": None, "bs16": None, "size_ratio": None, "accuracy_drop_pp": None}))
        return
    runtime = best.split(":", 1)[0]
    provider = "OpenVINOExecutionProvider" if runtime == "openvino-ep" else "CPUExecutionProvider"
    build = builds["openvino" if runtime == "openvino-ep" else runtime]
    print(f"\nbest: {best}")
    print(
        json.dumps(
            {
                "bs1": round(ok[(best, 1)].speedup, 2),
                "bs16": round(ok[(best, 16)].speedup, 2),
                "size_ratio": round(fp32_bytes / sizes[best], 2),
                "accuracy_drop_pp": round((source - scores[best]) * 100, 2),
                "variant": best,
                "runtime": f"{build.split(' [')[0]} {provider}",
                "bs1_interval": [
                    round(ok[(best, 1)].speedup_low, 2),
                    round(ok[(best, 1)].speedup_high, 2),
                ],
                "bs16_interval": [
                    round(ok[(best, 16)].speedup_low, 2),
                    round(ok[(best, 16)].speedup_high, 2),
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
