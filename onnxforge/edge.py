"""The edge bundle of a passing variant: an ORT-format file, the operators a reduced build needs,
the mobile usability verdict, single-thread latency and peak memory.

An ORT-format file (`.ort`) is what ONNX Runtime's minimal and mobile builds load: the graph
optimized once at conversion (onnxruntime.tools.convert_onnx_models_to_ort), no protobuf parser
needed at run time. The converter also writes `required_operators.config`, the operator list
to build a reduced runtime with (`build.sh --include_ops_by_config`). The usability check
(onnxruntime.tools.mobile_helpers.usability_checker, what `check_onnx_model_mobile_usability`
runs) says whether NNAPI (Android) or CoreML (iOS) could take parts of the graph.

Facts about the tools (onnxruntime 1.32) that shape this module:
- Importing `onnxruntime.tools` imports torch whenever torch is installed (its `__init__` pulls
  in pytorch_export_helpers: 1.1 s), and its config writer calls `logging.basicConfig` at
  import; the converter prints progress and ONNX Runtime warns on stderr. So both tools run in
  a process of their own (`python -m onnxforge.edge`), called as Python functions there: a
  Keras run never loads torch, and nothing reaches the run's log unless ONNXFORGE_VERBOSE.
- With `optimization_style: Runtime` the converter makes a temporary folder beside its input;
  the input is therefore a copy in a folder of ours, never the artifact's own folder.
- The required-operators config names the absolute paths of the files it was read from (for
  Runtime, a random temporary one): its header is rewritten so that the file depends only on
  the model. The `.ort` bytes themselves differ between two conversions of the same file
  (same size, tables serialized in another order), so its sha256 identifies this bundle's
  file, not the model: a rerun logs a new sha256.
- `target_platform: amd64` with `Fixed` keeps ONNX Runtime's NCHWc layout transform, which
  ONNX Runtime warns is specific to the converting machine's CPU; `arm` leaves it out. The
  verdict says so when the file holds NCHWc operators.

The `.ort` file is checked for parity against the source like any variant, held to its
variant's bar, and timed with one thread at batch 1 in its own measuring process
(onnxforge.bench_worker), whose peak RSS over the RSS just before the session is created is the
memory figure: session creation, initializers, arena and runs, not the interpreter or the ONNX
Runtime library. `champion-edge` goes to the fastest such file within `edge.memory_budget_mb`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.data_record import DataRecord
from onnxforge.errors import StageError
from onnxforge.onnx_files import sha256_of
from onnxforge.recipe import BenchmarkSpec, EdgeSpec, Recipe
from onnxforge.records import (
    BenchContenders,
    BenchResult,
    EdgeBundle,
    EdgeCandidate,
    ModelArtifact,
    ParityFailure,
    ParityResult,
)
from onnxforge.variants import VARIANTS

CPU = "CPUExecutionProvider"
EDGE_ALIAS = "champion-edge"  # the alias of the fastest one-thread .ort within the budget
EDGE_PROFILE = "edge"  # the name its rows and parity result carry: a .ort file, one thread
TOOLS_TIMEOUT_S = 900  # conversion plus usability check of one file
MARKER = "@@onnxforge-edge "  # prefixes the tools process's reply: library prints are not one
NCHWC_DOMAIN = "com.microsoft.nchwc"


def build_bundle(
    artifact: ModelArtifact, spec: EdgeSpec, out_dir: Path, label: str | None = None
) -> EdgeBundle:
    """Convert `artifact` to ORT format in out_dir/<label>/ (`<label>.ort`, its required-operators
    config and `<label>.usability.txt`; `label`: its row name, the variant by default);
    StageError("edge", ..., label) when a tool refuses it. A previous bundle there is replaced."""
    label = label or artifact.variant
    out_dir = out_dir.resolve()  # the tools process runs in another folder
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{label}.", dir=out_dir))
    try:
        source = _stage_source(artifact, staging / "source", label)
        built = staging / "bundle"
        reply = _run_tools(source, spec, built, label)
        ort_path = built / reply["ort"]
        config = _rewrite_config(built / reply["config"], label, spec, reply["onnxruntime"])
        usability_path = built / f"{label}.usability.txt"
        usability_path.write_text(reply["report"])
        verdict = usability_verdict(reply["report"], reply["try_eps"], config.read_text())
        folder = out_dir / label
        if folder.exists():
            shutil.rmtree(folder)
        built.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return EdgeBundle(
        variant=artifact.variant,
        label=label,
        ort_path=str(folder / ort_path.name),
        ort_sha256=sha256_of(folder / ort_path.name),
        ort_size_bytes=(folder / ort_path.name).stat().st_size,
        ops_config_path=str(folder / config.name),
        ops_config_sha256=sha256_of(folder / config.name),
        usability=verdict,
        usability_path=str(folder / usability_path.name),
        usability_sha256=sha256_of(folder / usability_path.name),
        optimization_style=spec.optimization_style,
        target_platform=spec.target_platform,
    )


def _stage_source(artifact: ModelArtifact, folder: Path, label: str) -> Path:
    """A copy of the artifact's .onnx (as `<label>.onnx`) and its external-data files."""
    from onnxforge.onnx_files import external_data_files

    source = Path(artifact.path)
    folder.mkdir()
    try:
        for data_file in external_data_files(source):
            target = folder / data_file.relative_to(source.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_file, target)
    except Exception:  # noqa: BLE001 - not an ONNX file: the converter's refusal names it
        pass
    try:
        shutil.copyfile(source, folder / f"{label}.onnx")
    except OSError as error:
        raise StageError("edge", f"cannot read {source}: {error}", label, CPU) from None
    return folder / f"{label}.onnx"


def _run_tools(source: Path, spec: EdgeSpec, out: Path, label: str) -> dict[str, Any]:
    """The converter and the usability check on `source`, in a process of their own (see the
    module docstring); their reply, or StageError naming the step that failed."""
    from onnxforge.chatter import verbose
    from onnxforge.procs import tied_command

    request = {
        "model": source.name,
        "out": str(out),
        "optimization_style": spec.optimization_style,
        "target_platform": spec.target_platform,
    }
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.getenv("PYTHONPATH")])),
    }
    try:
        result = subprocess.run(
            tied_command([sys.executable, "-m", "onnxforge.edge"]),  # dies with this process
            input=json.dumps(request),
            stdout=subprocess.PIPE,
            stderr=None if verbose() else subprocess.PIPE,
            text=True,
            cwd=source.parent,  # the usability report names the file as `<label>.onnx`
            env=env,
            timeout=TOOLS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        reason = f"conversion and usability check took over {TOOLS_TIMEOUT_S} s; killed"
        raise StageError("edge", reason, label, CPU) from None
    replies = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    if not replies:
        tail = ((result.stderr or "").strip().splitlines() or ["no output"])[-1][:300]
        reason = f"the conversion process exited {result.returncode}: {tail}"
        raise StageError("edge", reason, label, CPU)
    reply = json.loads(replies[-1][len(MARKER) :])
    if not reply["ok"]:
        raise StageError(
            "edge", f"{reply['step']} refused {source.name}: {reply['error']}", label, CPU
        )
    return reply


def _rewrite_config(config: Path, label: str, spec: EdgeSpec, version: str) -> Path:
    """The converter's config with a header that names the model, not absolute paths."""
    entries = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    config.write_text(
        f"# Operators an ONNX Runtime build needs to run {label}.ort "
        "(build.sh --include_ops_by_config <this file>)\n"
        f"# onnxruntime {version} convert_onnx_models_to_ort, optimization style "
        f"{spec.optimization_style}, target platform {spec.target_platform}\n"
        + "".join(f"{line}\n" for line in entries)
    )
    return config


def required_operators(config_text: str) -> dict[str, set[str]]:
    """domain -> operator names, from a required-operators config (`domain;opset;A,B` lines)."""
    operators: dict[str, set[str]] = {}
    for line in config_text.splitlines():
        if line.strip() and not line.startswith("#"):
            domain, _opset, names = line.split(";", 2)
            operators.setdefault(domain, set()).update(n for n in names.split(",") if n)
    return operators


_SUITABLE = re.compile(r"Model should perform well with (.+?) as is: (\w+)")
_FIXED = re.compile(
    r"Model should perform well with (.+?) if modified to have fixed input shapes: (\w+)"
)


def usability_verdict(report: str, try_eps: bool, config_text: str = "") -> str:
    """One line from the usability report: the tool's recommendation, each EP's answer (and
    with fixed input shapes where that differs), and a caveat for CPU-specific NCHWc files."""
    fixed = {ep: answer.lower() for ep, answer in _FIXED.findall(report)}
    per_ep = []
    for ep, answer in _SUITABLE.findall(report):
        better = fixed.get(ep)
        shown = f"{ep} {answer.lower()}"
        per_ep.append(
            shown
            + (
                f" ({better} with fixed input shapes)"
                if better and better != answer.lower()
                else ""
            )
        )
    head = (
        "NNAPI or CoreML may take part of the graph: compare with the CPU EP"
        if try_eps
        else "CPU EP recommended"
    )
    verdict = "; ".join([head, ", ".join(per_ep)] if per_ep else [head])
    if NCHWC_DOMAIN in required_operators(config_text):
        verdict += (
            "; holds NCHWc operators specific to this machine's CPU "
            "(target_platform arm leaves them out)"
        )
    return verdict


def edge_parity(
    recipe: Recipe,
    bundle: EdgeBundle,
    features: np.ndarray,
    labels: np.ndarray | None,
    reference: list[np.ndarray],
) -> ParityResult:
    """The .ort file against the source model's outputs, held to its variant's own bar (CPU,
    one thread, as an edge device runs it); a file ONNX Runtime cannot run fails `not_run`."""
    from onnxforge.batching import run_accepted
    from onnxforge.parity import ParityBar, compare_outputs
    from onnxforge.runtime import make_session
    from onnxforge.tool_errors import ort_errors

    named = {"variant": bundle.label, "profile": EDGE_PROFILE}
    try:
        session = make_session(bundle.ort_path, CPU, 1)
        outputs = run_accepted(session, features)
    except ort_errors() as error:
        failure = ParityFailure(kind="not_run", message=f"the .ort file does not run: {error}")
        return ParityResult(**named, passed=False, failures=(failure,))
    names = [o.name for o in session.get_outputs()]
    bar = ParityBar(recipe.tolerance(bundle.variant), recipe.parity.accuracy_drop_budget)
    result = compare_outputs(bundle.variant, reference, outputs, labels, bar, names)
    return result.model_copy(update=named)


def edge_rows(spec: BenchmarkSpec, bundles: list[EdgeBundle], features: Path) -> list[BenchResult]:
    """Single-thread batch-1 rows (CPU, profile `edge`) of the .ort files, interleaved in one
    set of rounds; each row's peak_rss_increase_mb is its session's peak memory."""
    from onnxforge.benchmark import Contender, machine_lock_path, measure_interleaved, onnx_load

    single = spec.model_copy(
        update={"intra_op_threads": 1, "inter_op_threads": 1, "batch_sizes": [1]}
    )
    contenders = [
        Contender(
            b.label,
            "champion" if b.label != b.variant else "run",
            onnx_load(b.ort_path, CPU, single, features),
            b.ort_size_bytes,
            profile=EDGE_PROFILE,
        )
        for b in bundles
    ]
    if not contenders:
        return []
    return measure_interleaved(contenders, CPU, single, machine_lock_path())


def choose_edge(candidates: list[EdgeCandidate], budget_mb: float) -> tuple[str | None, str]:
    """The variant whose .ort passed parity, fits the memory budget and is fastest with one
    thread at batch 1 (lowest p50); (None, why each one is out) when none does."""
    fitting, out = [], []
    for candidate in candidates:
        bundle, row = candidate.bundle, candidate.row
        if bundle.label != bundle.variant:  # the edge champion's file: a yardstick, not a choice
            continue
        if not candidate.parity.passed:
            kinds = ", ".join(sorted({f.kind for f in candidate.parity.failures})) or "failed"
            out.append(f"{bundle.label} failed parity ({kinds})")
        elif row is None or row.status != "ok" or row.p50_ms is None:
            out.append(f"{bundle.label} not timed ({row.status if row else 'no row'})")
        elif row.peak_rss_increase_mb is None:
            out.append(f"{bundle.label} has no memory figure")
        elif row.peak_rss_increase_mb > budget_mb:
            out.append(f"{bundle.label} {row.peak_rss_increase_mb:.1f} MB")
        else:
            fitting.append((row.p50_ms, row.peak_rss_increase_mb, bundle.variant))
    if not fitting:
        detail = "; ".join(out) or "no bundles"
        return None, f"no edge bundle qualifies: over the {budget_mb:g} MB budget or out ({detail})"
    p50, peak, best = min(fitting)
    return best, (
        f"fastest single-thread .ort within {budget_mb:g} MB: {best} p50 {p50:.3f} ms at bs1, "
        f"peak memory {peak:.1f} MB" + (f" (out: {'; '.join(out)})" if out else "")
    )


def edge_candidates(
    recipe: Recipe, contenders: BenchContenders, data: DataRecord, work_dir: Path
) -> list[EdgeCandidate]:
    """A bundle of every passing variant and of the verified file holding `champion-edge`,
    each checked for parity on the run's test split and timed in one set of rounds."""
    from onnxforge.adapters import get_adapter
    from onnxforge.benchmark import benchmark_inputs
    from onnxforge.data_record import read_splits
    from onnxforge.training import load_source_model

    spec = recipe.edge
    if spec is None:
        return []
    out_dir = work_dir / "edge"
    # GPU-only variants (fp16) are left out: an edge device runs the CPU provider
    cpu_ready = [a for a in contenders.artifacts if VARIANTS[a.variant].device == "any"]
    bundles = [build_bundle(a, spec, out_dir) for a in cpu_ready]
    for holder in contenders.champions:
        if EDGE_ALIAS in holder.aliases and holder.path and holder.variant in VARIANTS:
            file = ModelArtifact(
                path=holder.path,
                sha256=holder.sha256,
                variant=holder.variant,
                parent=None,
                producer="registry",
                opset=0,
                size_bytes=holder.size_bytes or 0,
            )
            bundles.append(build_bundle(file, spec, out_dir, holder.label))
    splits = read_splits(data)
    model = load_source_model(recipe, contenders.trained.checkpoint, splits)
    reference = get_adapter(recipe.model.framework).predict(model, splits.x_test)
    parity = [edge_parity(recipe, b, splits.x_test, splits.y_test, reference) for b in bundles]
    timed = [b for b, p in zip(bundles, parity, strict=True) if p.passed]
    rows = {
        r.variant: r for r in edge_rows(recipe.benchmark, timed, benchmark_inputs(data, work_dir))
    }
    return [
        EdgeCandidate(bundle=b, parity=p, row=rows.get(b.label))
        for b, p in zip(bundles, parity, strict=True)
    ]


def _tools(request: dict[str, Any]) -> dict[str, Any]:
    """In the tools process (cwd: the staged model's folder): convert, then check usability."""
    import io
    import logging
    import types

    # onnxruntime/tools/__init__.py imports torch (1 s, hundreds of MB) for a PyTorch export
    # helper these tools never use: a stand-in keeps it out of this process.
    helpers = types.ModuleType("onnxruntime.tools.pytorch_export_helpers")
    helpers.infer_input_info = None  # type: ignore[attr-defined]
    sys.modules.setdefault("onnxruntime.tools.pytorch_export_helpers", helpers)
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )
    from onnxruntime.tools.mobile_helpers import usability_checker

    model, out = Path(request["model"]), Path(request["out"])
    style = request["optimization_style"]
    step = "convert_onnx_models_to_ort"
    try:
        convert_onnx_models_to_ort(  # given a file, it converts that file alone
            model,
            output_dir=out,
            optimization_styles=[OptimizationStyle[style]],
            target_platform=request["target_platform"],
        )
        suffix = ".with_runtime_opt" if style == "Runtime" else ""
        ort_file, config = (
            f"{model.stem}{suffix}.ort",
            f"{model.stem}.required_operators{suffix}.config",
        )
        missing = [name for name in (ort_file, config) if not (out / name).is_file()]
        if missing:
            raise FileNotFoundError(f"the converter did not write {missing}")
        step = "check_onnx_model_mobile_usability"
        stream = io.StringIO()
        logger = logging.getLogger("onnxforge.edge.usability")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.StreamHandler(stream))
        try_eps = usability_checker.analyze_model(model, skip_optimize=False, logger=logger)
    except Exception as error:  # noqa: BLE001 - a tool's refusal, whatever its type: reported
        return {"ok": False, "step": step, "error": f"{type(error).__name__}: {str(error)[:400]}"}
    return {
        "ok": True,
        "ort": ort_file,
        "config": config,
        "try_eps": bool(try_eps),
        "report": stream.getvalue(),
        "onnxruntime": ort.__version__,
    }


def main() -> None:
    """The tools process: one JSON request on stdin, one MARKER-prefixed reply on stdout (the
    tools' own prints go to stderr)."""
    from contextlib import redirect_stdout

    request = json.loads(sys.stdin.read())
    with redirect_stdout(sys.stderr):
        reply = _tools(request)
    sys.stdout.write("\n" + MARKER + json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
