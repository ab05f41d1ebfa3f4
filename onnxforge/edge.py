"""The edge bundle of a passing variant: an ORT-format file, the operators a reduced build needs,
the mobile usability verdict, single-thread latency and peak memory.

An ORT-format file (`.ort`) is what ONNX Runtime's minimal and mobile builds load: the graph
optimized once at conversion (onnxruntime.tools.convert_onnx_models_to_ort), no protobuf parser
needed at run time. The converter also writes `required_operators.config`, the operator list
to build a reduced runtime with (`build.sh --include_ops_by_config`). The usability check
(onnxruntime.tools.mobile_helpers.usability_checker, what `check_onnx_model_mobile_usability`
runs) says whether NNAPI (Android) or CoreML (iOS) could take parts of the graph. The `.ort`
file is checked for parity against the source like any variant, and timed with one thread at
batch 1 in its own measuring process (onnxforge.bench_worker), whose peak RSS over the
process's footprint before loading is the memory figure. `champion-edge` goes to the fastest
such file whose peak memory fits `edge.memory_budget_mb`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from onnxforge.data_record import DataRecord
from onnxforge.errors import StageError
from onnxforge.onnx_files import sha256_of
from onnxforge.promotion import EDGE_ALIAS
from onnxforge.recipe import BenchmarkSpec, EdgeSpec, Recipe
from onnxforge.records import (
    BenchContenders,
    BenchResult,
    EdgeBundle,
    EdgeCandidate,
    ModelArtifact,
    ParityResult,
)
from onnxforge.variants import VARIANTS

CPU = "CPUExecutionProvider"
EDGE_PROFILE = "edge"  # the name its rows and parity result carry: a .ort file, one thread


def build_bundle(
    artifact: ModelArtifact, spec: EdgeSpec, out_dir: Path, label: str | None = None
) -> EdgeBundle:
    """Convert `artifact` to ORT format in out_dir/<label>/ with its operator config and
    usability report (`label`: its row name, the variant by default); StageError("edge", ...,
    label) when a tool refuses it."""
    label = label or artifact.variant
    folder = out_dir / label
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ort_path, config = _convert(Path(artifact.path), spec, folder)
        verdict, report = _usability(Path(artifact.path))
    except Exception as error:  # noqa: BLE001 - the tools raise many types; the stage names it
        message = f"ORT-format conversion failed: {type(error).__name__}: {str(error)[:300]}"
        raise StageError("edge", message, label, CPU) from None
    usability_path = folder / "mobile_usability.txt"
    usability_path.write_text(report)
    return EdgeBundle(
        variant=artifact.variant,
        label=label,
        ort_path=str(ort_path),
        ort_sha256=sha256_of(ort_path),
        ort_size_bytes=ort_path.stat().st_size,
        ops_config_path=str(config),
        ops_config_sha256=sha256_of(config),
        usability=verdict,
        usability_path=str(usability_path),
        usability_sha256=sha256_of(usability_path),
        optimization_style=spec.optimization_style,
        target_platform=spec.target_platform,
    )


def _convert(model: Path, spec: EdgeSpec, folder: Path) -> tuple[Path, Path]:
    """The .ort file and required-operators config the converter writes into `folder` (its
    progress lines, printed to stdout, are dropped)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with contextlib.redirect_stdout(io.StringIO()):
        convert_onnx_models_to_ort(  # given a file, it converts that file alone
            model,
            output_dir=folder,
            optimization_styles=[OptimizationStyle[spec.optimization_style]],
            target_platform=spec.target_platform,
        )
    suffix = ".with_runtime_opt" if spec.optimization_style == "Runtime" else ""
    ort_path = folder / f"{model.stem}{suffix}.ort"
    config = folder / f"{model.stem}.required_operators{suffix}.config"
    if not ort_path.is_file() or not config.is_file():
        raise RuntimeError(f"the converter wrote {sorted(p.name for p in folder.iterdir())}")
    return ort_path, config


def _usability(model: Path) -> tuple[str, str]:
    """(one-line verdict, the checker's whole log) for an ONNX file."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("onnxforge.edge.usability")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        try_eps = usability_checker.analyze_model(model, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    verdict = (
        "NNAPI (Android) or CoreML (iOS) may take part of the graph: compare them with the CPU EP"
        if try_eps
        else "CPU EP recommended: NNAPI and CoreML would take little or none of the graph"
    )
    return verdict, stream.getvalue()


def edge_parity(
    recipe: Recipe,
    bundle: EdgeBundle,
    features: np.ndarray,
    labels: np.ndarray | None,
    reference: list[np.ndarray],
) -> ParityResult:
    """The .ort file against the source model, held to its variant's own bar (CPU, one
    thread, as an edge device runs it)."""
    from onnxforge.batching import run_accepted
    from onnxforge.parity import ParityBar, compare_outputs
    from onnxforge.runtime import make_session
    from onnxforge.tool_errors import ort_errors

    named = {"variant": bundle.label, "profile": EDGE_PROFILE}
    try:
        session = make_session(bundle.ort_path, CPU, 1)
        outputs = run_accepted(session, features)
    except ort_errors() as error:
        from onnxforge.records import ParityFailure

        failure = ParityFailure(kind="not_run", message=f"the .ort file does not run: {error}")
        return ParityResult(**named, passed=False, failures=(failure,))
    names = [o.name for o in session.get_outputs()]
    bar = ParityBar(recipe.tolerance(bundle.variant), recipe.parity.accuracy_drop_budget)
    result = compare_outputs(bundle.variant, reference, outputs, labels, bar, names)
    return result.model_copy(update=named)


def edge_rows(spec: BenchmarkSpec, bundles: list[EdgeBundle], features: Path) -> list[BenchResult]:
    """Single-thread batch-1 rows of the .ort files, interleaved in one set of rounds."""
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
    thread at batch 1; (None, why) when none does."""
    fitting, over = [], []
    for candidate in candidates:
        row = candidate.row
        if candidate.bundle.label != candidate.bundle.variant:  # the edge champion's file
            continue
        if not candidate.parity.passed or row is None or row.status != "ok":
            continue
        peak = row.peak_rss_increase_mb or 0.0
        (fitting if peak <= budget_mb else over).append((row.p50_ms, peak, candidate))
    if not fitting:
        detail = ", ".join(f"{c.bundle.variant} {peak:.1f} MB" for _, peak, c in over)
        why = f"over the {budget_mb:g} MB budget ({detail})" if over else "none passed parity"
        return None, f"no edge bundle qualifies: {why}"
    p50, peak, best = min(fitting, key=lambda entry: entry[0])
    return best.bundle.variant, (
        f"fastest single-thread .ort within {budget_mb:g} MB: {best.bundle.variant} "
        f"p50 {p50:.3f} ms at bs1, peak memory {peak:.1f} MB"
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
