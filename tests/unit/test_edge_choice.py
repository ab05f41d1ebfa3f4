"""champion-edge's choice over made-up rows, the usability verdict and the operator config
parsing: no model, no ONNX Runtime session."""

from __future__ import annotations

from onnxforge.edge import EdgeCandidate, choose_edge, required_operators, usability_verdict
from onnxforge.records import BenchResult, EdgeBundle, ParityFailure, ParityResult

CPU = "CPUExecutionProvider"


def _candidate(
    variant: str, p50: float, peak: float | None, passed: bool = True, label: str | None = None
) -> EdgeCandidate:
    label = label or variant
    bundle = EdgeBundle(
        variant=variant,
        label=label,
        ort_path=f"/x/{label}.ort",
        ort_sha256="0" * 64,
        ort_size_bytes=1,
        ops_config_path="c",
        ops_config_sha256="0" * 64,
        usability="CPU EP recommended",
        usability_path="u",
        usability_sha256="0" * 64,
        optimization_style="Fixed",
        target_platform="arm",
    )
    failures = () if passed else (ParityFailure(kind="tolerance_exceeded", message="m"),)
    parity = ParityResult(variant=label, profile="edge", passed=passed, failures=failures)
    row = BenchResult(
        variant=label,
        provider=CPU,
        batch_size=1,
        status="ok",
        profile="edge",
        p50_ms=p50,
        peak_rss_increase_mb=peak,
    )
    return EdgeCandidate(bundle=bundle, parity=parity, row=row if passed else None)


CANDIDATES = [
    _candidate("fp32", p50=2.0, peak=50.0),
    _candidate("int8-dynamic", p50=1.0, peak=300.0),
    _candidate("simplified", p50=0.5, peak=10.0, passed=False),
    _candidate("int8-static", p50=0.1, peak=1.0, label="champion-v3"),  # the holder's file
    _candidate("ort-optimized", p50=0.2, peak=None),
]


def test_the_fastest_passing_file_within_the_budget_is_chosen() -> None:
    assert choose_edge(CANDIDATES, 1000)[0] == "int8-dynamic"
    chosen, reason = choose_edge(CANDIDATES, 100)
    assert chosen == "fp32" and "int8-dynamic 300.0 MB" in reason
    assert "simplified failed parity (tolerance_exceeded)" in reason
    assert "ort-optimized has no memory figure" in reason


def test_a_budget_below_every_figure_chooses_nothing_and_says_why() -> None:
    chosen, reason = choose_edge(CANDIDATES, 5)
    assert chosen is None
    assert reason.startswith("no edge bundle qualifies: over the 5 MB budget")
    assert "fp32 50.0 MB" in reason and "int8-dynamic 300.0 MB" in reason
    assert choose_edge([], 5) == (
        None,
        "no edge bundle qualifies: over the 5 MB budget or out (no bundles)",
    )


REPORT = """Checking fp32.onnx for usability with ORT Mobile.
Model should perform well with NNAPI as is: NO
Model should perform well with NNAPI if modified to have fixed input shapes: YES
Model should perform well with CoreML MLProgram as is: MAYBE
Model should perform well with CoreML MLProgram if modified to have fixed input shapes: MAYBE
"""


def test_the_usability_verdict_condenses_the_report() -> None:
    config = "# header\nai.onnx;13;Gemm\ncom.microsoft.nchwc;1;Conv,ReorderOutput\n"
    assert required_operators(config) == {
        "ai.onnx": {"Gemm"},
        "com.microsoft.nchwc": {"Conv", "ReorderOutput"},
    }
    verdict = usability_verdict(REPORT, True, config)
    assert verdict.startswith("NNAPI or CoreML may take part of the graph")
    assert "NNAPI no (yes with fixed input shapes), CoreML MLProgram maybe;" in verdict
    assert "NCHWc operators specific to this machine's CPU" in verdict
    assert usability_verdict(REPORT, False).startswith("CPU EP recommended;")
