"""The speed a deployer gets: the registered champion of a BERT-small-shaped `transformers`
model, pulled and loaded as a deployer loads it, against the same BERT in PyTorch eager.

    flock /tmp/onnxforge-heavy.lock .venv/bin/python benchmarks/deployed_speed.py [--quick]

1. Write a recipe (RECIPE below) into a work folder: a `transformers` BERT classifier
   (architecture hf_sequence_classifier, model_type bert) of the BERT-small shape: hidden 512,
   8 heads, 4 layers, FFN 2048, sequence 128. Data: the marker-majority task of
   benchmarks/transformer_speed.py (which of four marker tokens occurs most often; 2400 samples,
   a quarter of them the test split), not the generated token_majority task of
   configs/hf_bert.yaml, on which transformer_speed.py's encoder of this size stayed at chance
   at sequence 128 (a model at chance is refused by the quality floors, onnxforge/floors.py). One epoch at learning rate
   1.5e-4, batches of 16, as transformer_speed.py trains. Variants: simplified, ort-optimized,
   int8-dynamic (from simplified: under the no-skiplayernorm profile it was the fastest row of
   transformer_speed.py's table in docs/benchmarks.md, ahead of int8 from the fused graph) and
   int8-static. Benchmark: CPUExecutionProvider, batch 1 and 16, intra-op threads = --threads
   (the same for training and PyTorch), the default runtime profiles (`default` and
   `no-skiplayernorm`, onnxforge/profiles.py).
2. Run it through the real flow in embedded mode, `python -m flows.cli run RECIPE` (what
   `onnxforge run` runs), with ONNXFORGE_HOME a fresh folder inside the work folder (its own
   MLflow store and Prefect state); the flow trains, exports, builds, checks parity, benchmarks
   every (variant, profile) pair and registers the champion.
3. `python -m flows.cli pull NAME@champion --to PULLED`: model.onnx and manifest.json, sha256
   verified. The folder is left in place and named on the last line.
4. Load it with `onnxforge.runtime.session_from(PULLED)`, the public loader, and time it
   against PyTorch eager with the project's harness (onnxforge.benchmark.measure_interleaved):
   one fresh process per contender, interleaved rounds, the machine-wide benchmark lock.

Why the timed session is the deployed one: session_from builds an InferenceSession in the
calling process, while the harness times every contender in a process of its own. So the ONNX
contender's load request is built from the pulled manifest's "profile" exactly: its provider,
intra/inter-op threads and session settings go to onnxforge.benchmark.onnx_load, and the
measuring process builds its session with onnxforge.runtime.make_session from those values,
the function session_from is specified to build the session with (same file, same provider and
provider options, same SessionOptions, same disabled optimizers). The script checks it: it
builds both sessions here and asserts that their intra/inter-op threads, graph optimization
level, execution mode, providers and provider options are equal, and that the threads are the
manifest's and --threads. (Disabled optimizers cannot be read back from a session; they come
from the same `settings` in both.)

The baseline is the same weights (the flow's checkpoint, read from the run's work folder) in
PyTorch eager with `transformers`' default attention implementation (SDPA in transformers 5),
with --threads intra-op threads: the recipe builds the model with eager attention, the form the
ONNX export and ONNX Runtime's fusions need, and the flow's own baseline row uses it too; the
deployer's comparison is against what `from_config` / `from_pretrained` give by default. The
same weights with eager attention are timed in the same rounds as a reference row (no target).

A ratio is PyTorch eager p50 / pulled-model p50 within one round; the figure is the median
over rounds with a 95% bootstrap interval over rounds (onnxforge.rounds), as the flow reports
it. Accuracy: argmax of the pulled model (the session_from session) against the test split's
labels, and the PyTorch model's on the same samples; accuracy_drop_pp is the difference in
points. Targets: at least 3.5x at batch 1 and 3.0x at batch 16, within 0.5 points of accuracy;
each is printed met or missed (the exit status is 0 either way; 2 when the pipeline's pieces
are missing or the flow registered no champion). The CPU's model name and the flags ONNX
Runtime's int8 kernels dispatch on (AVX-512, VNNI, AMX) are printed first: a figure holds for
that CPU only. The last line of stdout is one JSON object:
{"bs1", "bs16", "accuracy_drop_pp", "profile", "pulled", ...}; progress goes to stderr.

--quick (smaller data, fewer rounds) checks that the whole path works; its numbers are not
the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODEL_NAME = "bert-small-deployed"
TARGETS = {1: 3.5, 16: 3.0}
MAX_DROP_PP = 0.5

# The recipe the flow runs, written into the work folder (absolute data path). Benchmark rounds
# and iterations are kept small: a batch-16 call of the fp32 files takes about a third of a
# second on 2 threads, and the flow times every (variant, profile) pair.
RECIPE = """\
# Written by benchmarks/deployed_speed.py: a BERT-small-shaped transformers classifier.
name: {name}
dataset: {{source: npz, path: {data}, features: x, labels: y, test_fraction: 0.25,
  val_fraction: 0.05, seed: 0}}
model:
  framework: pytorch
  architecture: hf_sequence_classifier
  kwargs: {{model_type: bert, vocab_size: 64, hidden_size: 512, num_hidden_layers: 4,
    num_attention_heads: 8, intermediate_size: 2048, max_position_embeddings: 512,
    hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}}
train: {{epochs: {epochs}, batch_size: 16, learning_rate: 0.00015, seed: 0, threads: {threads}}}
export: {{opset: 18, exporter: dynamo, dynamic_axes: {{0: batch, 1: sequence}}}}
variants:
  simplified: {{check_n: 1}}
  ort-optimized: {{level: extended, transformer_fusions: auto, num_heads: 8, hidden_size: 512}}
  int8-dynamic: {{weight_type: QInt8, per_channel: true}}
  int8-static: {{calibration: MinMax, samples: {calibration}, per_channel: true,
    activation_type: QUInt8, weight_type: QInt8}}
# profiles: the default ([default, no-skiplayernorm])
benchmark: {{providers: [CPUExecutionProvider], batch_sizes: [1, 16], intra_op_threads: {threads},
  rounds: {flow_rounds}, iterations: {flow_iterations}, warmup: 2}}
register: {{model_name: {name},
  objective: {{metric: p50_ms, provider: CPUExecutionProvider, batch_size: 16}}}}
mlflow: {{experiment: {name}}}
"""


class Missing(RuntimeError):
    """A piece the script needs from the pipeline is not there (said in one line)."""


def log(message: str) -> None:
    """Progress on stderr, so stdout ends with the JSON line."""
    print(message, file=sys.stderr, flush=True)


def cpu_line() -> str:
    """`lscpu`'s model name and the flags ONNX Runtime's int8 kernels dispatch on."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", "?").strip()
        flags = set(fields.get("Flags", "").split())
    except (OSError, subprocess.CalledProcessError):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?"
        )
        flags = next(
            (set(ln.split(":", 1)[1].split()) for ln in info if ln.startswith("flags")), set()
        )
    relevant = sorted(f for f in flags if f.startswith(("avx512", "amx")) or "vnni" in f)
    absent = [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f not in flags]
    return (
        f"{model}; {' '.join(relevant) or 'no AVX-512/VNNI/AMX'}; absent: {' '.join(absent) or '-'}"
    )


def write_recipe(args: argparse.Namespace, work: Path) -> Path:
    """The marker-majority data as .npz and the recipe that reads it."""
    import numpy as np
    from transformer_speed import marker_majority  # the same task and generator

    data_file = work / "marker_majority.npz"
    tokens, labels = marker_majority(args.samples)
    np.savez(data_file, x=tokens, y=labels)
    recipe_path = work / "recipe.yaml"
    recipe_path.write_text(
        RECIPE.format(
            name=MODEL_NAME,
            data=data_file,
            epochs=args.epochs,
            threads=args.threads,
            calibration=args.calibration,
            flow_rounds=args.flow_rounds,
            flow_iterations=args.flow_iterations,
        )
    )
    return recipe_path


def embedded_env(home: Path) -> dict[str, str]:
    """The CLI's environment: ONNXFORGE_HOME, no tracking or Prefect server of the caller's."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    env.pop("PREFECT_API_URL", None)
    env["ONNXFORGE_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def cli(arguments: list[str], env: dict[str, str], transcript: Path) -> tuple[int, list[str]]:
    """`python -m flows.cli ARGUMENTS` in the repository, its output streamed to stderr and kept
    in `transcript`; its exit status and output lines."""
    command = [sys.executable, "-m", "flows.cli", *arguments]
    log(f"$ ONNXFORGE_HOME={env['ONNXFORGE_HOME']} {' '.join(command)}")
    lines = []
    with transcript.open("a") as keep:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            keep.write(line)
            sys.stderr.write(line)
            lines.append(line.rstrip("\n"))
        return process.wait(), lines


def run_and_pull(args: argparse.Namespace, work: Path, pulled: Path) -> dict[str, Any]:
    """The flow on the recipe, then `pull NAME@champion`; the pulled manifest."""
    home = work / "home"
    if home.exists():  # a fresh store each time: nothing cached, the champion is this run's
        shutil.rmtree(home)
    home.mkdir(parents=True)
    env = embedded_env(home)
    recipe_path = write_recipe(args, work)
    transcript = work / "cli.log"
    started = time.perf_counter()
    status, lines = cli(["run", str(recipe_path)], env, transcript)
    flow_s = time.perf_counter() - started
    if status != 0:
        raise Missing(f"the flow failed (exit {status}); see {transcript}")
    summary = [
        line for line in lines if line.startswith(("Registered model", "Nothing registered"))
    ]
    log(f"flow: {flow_s:.0f} s; {summary[-1] if summary else 'no registration line'}")
    status, lines = cli(["pull", f"{MODEL_NAME}@champion", "--to", str(pulled)], env, transcript)
    if status != 0:
        raise Missing(f"pull {MODEL_NAME}@champion failed (exit {status}): {lines[-1:]}")
    manifest = json.loads((pulled / "manifest.json").read_text())
    return {"home": home, "recipe_path": recipe_path, "manifest": manifest, "flow_s": flow_s}


def deployed_profile(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's "profile" (onnxforge.profiles.deployed_profile), or Missing saying why."""
    profile = manifest.get("profile")
    if not isinstance(profile, dict):
        raise Missing(
            'the pulled manifest.json has no "profile" (keys: '
            f"{', '.join(sorted(manifest))}); `pull` must write the version's deployed profile "
            "there (onnxforge/consumer.py build_manifest, from the version tag profile.<provider>)"
        )
    needed = {"name", "provider", "intra_op_threads", "inter_op_threads", "settings"}
    if needed - set(profile):
        raise Missing(f'manifest "profile" lacks {sorted(needed - set(profile))}: {profile}')
    return profile


def loader() -> Any:
    """onnxforge.runtime.session_from, or Missing."""
    from onnxforge import runtime

    if not hasattr(runtime, "session_from"):
        raise Missing(
            "onnxforge.runtime has no session_from(folder) yet (the public loader of a pulled "
            "folder: an InferenceSession built from the manifest's profile)"
        )
    return runtime.session_from


def check_same_session(session: Any, pulled: Path, profile: dict[str, Any], threads: int) -> None:
    """session_from's session has the options of the one the harness times (make_session with
    the profile's provider, threads and settings), and those are the manifest's and --threads."""
    import onnxruntime as ort

    from onnxforge.runtime import make_session

    timed = make_session(
        str(pulled / "model.onnx"),
        profile["provider"],
        profile["intra_op_threads"],
        profile["inter_op_threads"],
        profile["settings"],
    )
    fields = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level")
    fields += ("execution_mode",)

    def options(s: Any) -> dict[str, Any]:
        opts = s.get_session_options()
        described = {field: getattr(opts, field) for field in fields}
        return {**described, "providers": s.get_providers(), "options": s.get_provider_options()}

    deployed, measured = options(session), options(timed)
    assert deployed == measured, f"session_from {deployed} != timed session {measured}"
    level = profile["settings"].get("graph_optimization_level", "ORT_ENABLE_ALL")
    expected = {
        "intra_op_num_threads": threads,
        "graph_optimization_level": getattr(ort.GraphOptimizationLevel, level),
    }
    got = {name: deployed[name] for name in expected}
    assert got == expected, f"deployed session {got}, expected {expected} (manifest, --threads)"
    assert profile["intra_op_threads"] == threads, f"profile threads {profile}, --threads {threads}"
    assert deployed["providers"][0] == profile["provider"], (deployed["providers"], profile)
    log(f"session_from == timed session: {deployed}")


def source_files(home: Path, manifest: dict[str, Any], work: Path) -> tuple[Path, Any]:
    """The flow's checkpoint and its data (the run's work folder), the data as a DataRecord."""
    from onnxforge.data_record import materialize, read_file
    from onnxforge.onnx_files import sha256_of

    run_dir = home / "work" / str(manifest.get("source_run_id"))
    checkpoints = sorted(run_dir.glob("checkpoint*"))
    data_file = run_dir / "data.npz"
    if not checkpoints or not data_file.is_file():
        raise Missing(f"no checkpoint or data.npz in the champion's run folder {run_dir}")
    splits = read_file(data_file, sha256_of(data_file))
    folder = work / "source"  # this run's: the timing inputs are written beside the data
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return checkpoints[0], materialize(splits, folder)


def default_attention() -> str:
    """The attention implementation `transformers` picks when none is asked for."""
    import transformers

    config = transformers.AutoConfig.for_model(
        "bert", vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    return str(model.config._attn_implementation)


def with_attention(recipe: Any, attention: str) -> dict[str, Any]:
    """The recipe as data (what a measuring process rebuilds the model from), its model built
    with `attention` as its attention implementation; the weights are the same."""
    data = recipe.to_data()
    data["model"]["kwargs"] = {**data["model"]["kwargs"], "attn_implementation": attention}
    return data


def measure(args: argparse.Namespace, pulled: Path, profile: dict, source: dict, data: Any) -> dict:
    """PyTorch eager (transformers' default attention, and the recipe's eager attention for
    reference) and the pulled model under its profile, interleaved; the rows by name."""
    from onnxforge.benchmark import (
        Contender,
        baseline_name,
        benchmark_inputs,
        common_load,
        framework_baseline,
        machine_lock_path,
        measure_interleaved,
        onnx_load,
    )
    from onnxforge.onnx_files import onnx_size_bytes

    recipe = source["recipe"]
    spec = recipe.benchmark.model_copy(
        update={
            "batch_sizes": list(TARGETS),
            "rounds": args.rounds,
            "iterations": args.runs,
            "warmup": 2,
            "intra_op_threads": profile["intra_op_threads"],
            "inter_op_threads": profile["inter_op_threads"],
        }
    )
    features = benchmark_inputs(data, Path(data.path).parent)
    # the recipe's eager attention as a reference row (the same contender when it is the default)
    torch_rows = {"pytorch": source["attention"], "pytorch-attn-eager": "eager"}
    if source["attention"] == "eager":
        del torch_rows["pytorch-attn-eager"]
    everyone = []
    for attention in torch_rows.values():
        load = framework_baseline(with_attention(recipe, attention), source["checkpoint"], data)
        load = {**load, **common_load(spec, features)}
        everyone.append(
            Contender(f"{baseline_name(recipe.model.framework)}[{attention}]", "framework", load)
        )
    model = str(pulled / "model.onnx")
    python = (profile.get("runtime") or {}).get("python") or sys.executable
    everyone.append(
        Contender(
            "pulled",
            "run",
            onnx_load(model, profile["provider"], spec, features, profile["settings"]),
            onnx_size_bytes(model),
            python,
            profile["name"],
        )
    )
    started = time.perf_counter()
    rows = measure_interleaved(everyone, profile["provider"], spec, machine_lock_path())
    log(f"timed in {time.perf_counter() - started:.0f} s")
    names = [*torch_rows, "pulled"]
    by_contender = dict(zip([c.label for c in everyone], names, strict=True))
    return {(by_contender[row.variant], row.batch_size): row for row in rows}


def accuracies(session: Any, source: dict, data: Any, threads: int) -> tuple[float, float, int]:
    """Test-split accuracy of the session_from session and of the PyTorch model (transformers'
    default attention); the number of test samples."""
    import numpy as np

    from onnxforge.adapters import get_adapter
    from onnxforge.data_record import read_splits
    from onnxforge.inputs import count, named, take
    from onnxforge.recipe import Recipe
    from onnxforge.runtime import input_names
    from onnxforge.training import load_source_model

    splits = read_splits(data)
    labels = np.asarray(splits.y_test)
    total = count(splits.x_test)
    names = input_names(session)
    predicted = [
        np.asarray(session.run(None, named(take(splits.x_test, slice(s, s + 16)), names))[0])
        for s in range(0, total, 16)
    ]
    onnx_accuracy = float((np.concatenate(predicted).argmax(1) == labels).mean())
    recipe = Recipe.model_validate(with_attention(source["recipe"], source["attention"]))
    adapter = get_adapter(recipe.model.framework)
    adapter.set_threads(threads)
    model = load_source_model(recipe, source["checkpoint"], splits)
    reference = [
        np.asarray(adapter.predict(model, take(splits.x_test, slice(s, s + 64)))[0])
        for s in range(0, total, 64)
    ]
    torch_accuracy = float((np.concatenate(reference).argmax(1) == labels).mean())
    return onnx_accuracy, torch_accuracy, total


def verdict(low: float, ratio: float, target: float) -> str:
    if low >= target:
        return "met (whole interval)"
    return "met by the median, not the whole interval" if ratio >= target else "MISSED"


def report(rows: dict, manifest: dict, profile: dict, source: dict, args: Any) -> dict:
    """Print the table and the targets; the numbers for the JSON summary."""
    from onnxforge.rounds import compare

    for row in rows.values():
        if row.status != "ok":
            print(f"  {row.variant} bs{row.batch_size}: NOT RUN ({row.status}: {row.reason})")
    print(
        f"\npulled {manifest['name']} v{manifest['version']} ({manifest['variant']}), profile "
        f"{profile['name']}: {profile['provider']}, intra {profile['intra_op_threads']} / inter "
        f"{profile['inter_op_threads']} threads, settings {json.dumps(profile['settings'])}, "
        f"runtime {json.dumps(profile.get('runtime'))}"
    )
    print(f"the flow's own ratios (its PyTorch row: eager attention): {manifest.get('speedup')}")
    print(
        f"{args.threads} threads everywhere, {args.rounds} rounds x {args.runs} runs; ratio: "
        "PyTorch p50 / pulled p50, median over rounds [95% bootstrap interval over rounds]"
    )
    summary: dict[str, Any] = {}
    for size, target in TARGETS.items():
        pulled = rows[("pulled", size)]
        for name in [n for n in ("pytorch", "pytorch-attn-eager") if (n, size) in rows]:
            torch_row = rows[(name, size)]
            compared = compare(pulled, torch_row)
            if compared is None:
                print(f"  bs{size:<3d} {torch_row.variant}: no ratio (a contender did not run)")
                summary.setdefault(f"bs{size}", None)
                continue
            line = (
                f"  bs{size:<3d} {torch_row.variant:28s} {torch_row.p50_ms:8.2f} ms "
                f"(cv {torch_row.round_cv:.2f})  pulled {pulled.p50_ms:8.2f} ms "
                f"(cv {pulled.round_cv:.2f})  {compared.ratio:5.2f}x "
                f"[{compared.low:.2f}, {compared.high:.2f}]"
            )
            if name == "pytorch":  # the target is against transformers' default attention
                line += f"  target >= {target}x: {verdict(compared.low, compared.ratio, target)}"
                summary[f"bs{size}"] = round(compared.ratio, 2)
                summary[f"bs{size}_interval"] = [round(compared.low, 2), round(compared.high, 2)]
            print(line)
    onnx_accuracy, torch_accuracy, samples = source["scores"]
    drop = round((torch_accuracy - onnx_accuracy) * 100, 2)
    print(
        f"  accuracy on {samples} test samples: PyTorch {torch_accuracy:.4f}, pulled "
        f"{onnx_accuracy:.4f}: drop {drop:+.2f} points; target <= {MAX_DROP_PP}: "
        f"{'met' if drop <= MAX_DROP_PP else 'MISSED'}"
    )
    summary["accuracy_drop_pp"] = drop
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="work folder (default: a new one in the temp folder)")
    parser.add_argument("--to", help="pull folder, left in place (default: WORK/pulled)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, everywhere")
    parser.add_argument("--samples", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--flow-rounds", type=int, default=6, help="the recipe's benchmark.rounds")
    parser.add_argument("--flow-iterations", type=int, default=10, help="benchmark.iterations")
    parser.add_argument("--rounds", type=int, default=10, help="this script's interleaved rounds")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender per round")
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer rounds")
    parser.add_argument(
        "--keep-home", action="store_true", help="keep WORK/home (MLflow store, run files)"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples = min(args.samples, 1600)
        args.calibration = min(args.calibration, 32)
        args.flow_rounds, args.flow_iterations = 2, 2
        args.rounds, args.runs = min(args.rounds, 3), min(args.runs, 2)
    work = Path(args.work or tempfile.mkdtemp(prefix="deployed-speed-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pulled = Path(args.to).resolve() if args.to else work / "pulled"
    print(f"cpu: {cpu_line()}")
    started = time.perf_counter()
    try:
        result = run_and_pull(args, work, pulled)
        manifest = result["manifest"]
        profile = deployed_profile(manifest)
        session = loader()(pulled)
        checkpoint, data = source_files(result["home"], manifest, work)
    except Missing as missing:
        print(f"error: {missing}", file=sys.stderr)
        print(json.dumps({"error": str(missing), "pulled": str(pulled)}))
        sys.exit(2)
    check_same_session(session, pulled, profile, args.threads)
    from onnxforge.recipe import load_recipe

    source = {
        "recipe": load_recipe(result["recipe_path"]),
        "checkpoint": str(checkpoint),
        "attention": default_attention(),
    }
    log(f"PyTorch: {checkpoint}, transformers' default attention {source['attention']!r}")
    rows = measure(args, pulled, profile, source, data)
    source["scores"] = accuracies(session, source, data, args.threads)
    summary = report(rows, manifest, profile, source, args)
    if not args.keep_home:
        shutil.rmtree(result["home"], ignore_errors=True)
    print(f"flow {result['flow_s']:.0f} s, all {time.perf_counter() - started:.0f} s; work {work}")
    print(
        json.dumps(
            {
                "bs1": summary.get("bs1"),
                "bs16": summary.get("bs16"),
                "accuracy_drop_pp": summary["accuracy_drop_pp"],
                "profile": profile["name"],
                "pulled": str(pulled),
                "variant": manifest.get("variant"),
                "bs1_interval": summary.get("bs1_interval"),
                "bs16_interval": summary.get("bs16_interval"),
            }
        )
    )


if __name__ == "__main__":
    main()
