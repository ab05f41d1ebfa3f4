"""One contender's measuring process: `python -m onnxforge.bench_worker`, driven over stdin.

The parent starts one fresh interpreter per contender (an ONNX variant on one provider, the
current champion, or the framework baseline), so one contender's allocations, thread pools and
caches never colour another's. The protocol is one JSON object per line:

    parent -> {"load": {...}}                       worker -> {"ok": true, "session_ms": ...,
                                                               "unsupported": {"16": "why"}}
    parent -> {"batch_size": 16, "iterations": 50}  worker -> {"ok": true, "timings_ms": [...]}

and end of input ends the process. `python -m onnxforge.bench_worker --argmax` answers one
request instead: the first output's argmax over a features file, from a session built the same
way (onnxforge.benchmark.contender_argmax), so a contender is scored in the build that timed it. Replies are prefixed with MARKER so that whatever a library
prints to stdout cannot be taken for one. Between requests the worker sits idle, which is what lets
the parent interleave contenders round by round (A, B, C, A, B, C, ...).
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "@@onnxforge-bench "
PARENT_ENV = "ONNXFORGE_BENCH_PARENT"  # the pid this worker must not outlive


class BatchRefused(Exception):
    """This contender cannot run this batch size (e.g. its inputs fix the batch at another)."""


def _refusing(reason: str) -> Callable[[], Any]:
    def call() -> Any:
        raise BatchRefused(reason)

    return call


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from Linux /proc/self/status, in MB (None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec. Not
    ru_maxrss: Linux carries it over from the parent through fork and exec, so a worker
    started by a flow that imported torch reads the flow's ~800 MB peak."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _current_rss_mb() -> float:
    """Resident memory now (VmRSS), else the peak so far: where the session's own peak is
    measured from (imports free memory, so the peak before loading can sit above it)."""
    current = _status_mb("VmRSS")
    return current if current is not None else _peak_rss_mb()


def _onnx_calls(request: dict[str, Any], batches: dict[int, Any]) -> dict[int, Callable[[], Any]]:
    from onnxforge.batching import refused_batch
    from onnxforge.inputs import named
    from onnxforge.runtime import input_names, make_session

    session = make_session(
        request["path"],
        request["provider"],
        request["intra_op_threads"],
        request["inter_op_threads"],
        request.get("settings"),
    )
    calls: dict[int, Callable[[], Any]] = {}
    for size, batch in batches.items():
        refusal = refused_batch(session, size)
        if refusal is not None:
            calls[size] = _refusing(refusal)
            continue
        feed = named(batch, input_names(session))
        calls[size] = lambda feed=feed: session.run(None, feed)
    return calls


def _framework_calls(
    request: dict[str, Any], batches: dict[int, Any]
) -> dict[int, Callable[[], Any]]:
    from onnxforge.adapters import get_adapter
    from onnxforge.data_record import read_file
    from onnxforge.recipe import Recipe
    from onnxforge.tool_errors import framework_errors
    from onnxforge.training import load_source_model

    recipe = Recipe.model_validate(request["recipe"])
    adapter = get_adapter(recipe.model.framework)
    adapter.set_threads(request["intra_op_threads"])  # before the framework starts its runtime
    data = request["data"]  # the run's materialised splits: {"path", "sha256"}
    splits = read_file(data["path"], data["sha256"])
    model = load_source_model(recipe, request["checkpoint"], splits)
    calls: dict[int, Callable[[], Any]] = {}
    for size, batch in batches.items():
        try:
            calls[size] = adapter.latency_callable(model, batch)
        except framework_errors() as error:  # e.g. a brought ONNX file whose batch is fixed
            calls[size] = _refusing(str(error))
    return calls


def load(
    request: dict[str, Any],
) -> tuple[dict[int, Callable[[], Any]], dict[str, float], dict[int, str]]:
    """Create the session (or model) once, one callable per batch size, each warmed up (at least
    one call: a batch size the contender cannot run is returned with its reason instead)."""
    from onnxforge.inputs import load as load_features
    from onnxforge.inputs import tile

    features = load_features(request["features"])
    batches = {size: tile(features, size) for size in request["batch_sizes"]}
    rss_before = _current_rss_mb()
    started = time.perf_counter()
    make_calls = _framework_calls if request["kind"] == "framework" else _onnx_calls
    calls = make_calls(request, batches)
    session_ms = (time.perf_counter() - started) * 1000.0
    refused = _tool_errors(request["kind"]) + (BatchRefused,)
    unsupported: dict[int, str] = {}
    for size, call in list(calls.items()):
        try:
            for _ in range(max(1, request["warmup"])):
                call()
        except refused as error:
            unsupported[size] = (
                str(error) if isinstance(error, BatchRefused) else _failure(error)["error"]
            )
            del calls[size]
    return calls, {"session_ms": session_ms, "rss_before_mb": rss_before}, unsupported


def time_calls(
    call: Callable[[], Any], iterations: int, time_budget_s: float | None, min_iterations: int
) -> list[float]:
    """One untimed call (the contender ran last a round ago), then the timed ones, in ms."""
    call()
    timings: list[float] = []
    deadline = time.perf_counter() + time_budget_s if time_budget_s else None
    while True:
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000.0)
        if deadline is None and len(timings) >= iterations:
            return timings
        if deadline is not None and time.perf_counter() >= deadline:
            if len(timings) >= min_iterations:
                return timings


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write("\n" + MARKER + json.dumps(message) + "\n")
    sys.stdout.flush()


def _failure(error: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(error).__name__}: {str(error).strip()[:400]}"}


def _tool_errors(kind: str) -> tuple[type[BaseException], ...]:
    """The errors that mean "this contender cannot run here"; anything else is our bug."""
    from onnxforge.tool_errors import framework_errors, ort_errors

    return ort_errors() + (framework_errors() if kind == "framework" else ())


def _serve(request: dict[str, Any]) -> None:
    refused = _tool_errors(request["kind"])
    try:
        calls, loaded, unsupported = load(request)
    except refused as error:  # the parent records it as an 'unsupported' row
        _reply(_failure(error))
        return
    # batch sizes this contender cannot run: 'unsupported' rows with their reason
    refused_sizes = {str(size): reason for size, reason in unsupported.items()}
    _reply({"ok": True, "session_ms": loaded["session_ms"], "unsupported": refused_sizes})
    for line in sys.stdin:
        if not line.strip():
            continue
        ask = json.loads(line)
        try:
            timings = time_calls(
                calls[ask["batch_size"]], ask["iterations"], ask.get("time_budget_s"), 3
            )
        except refused as error:  # same as above, for one batch size
            _reply(_failure(error))
            continue
        peak = _peak_rss_mb() - loaded["rss_before_mb"]
        _reply({"ok": True, "timings_ms": timings, "peak_rss_increase_mb": peak})


def first_output_argmax(request: dict[str, Any]) -> list[int]:
    """The argmax of the first output over the request's features, in chunks of `batch_size`
    (the last chunk padded to that size, a shape the session has already run), from a session
    built as the timed one was: what scores a contender in the runtime build that timed it."""
    import numpy as np

    from onnxforge.inputs import count, named, take, tile
    from onnxforge.inputs import load as load_features
    from onnxforge.runtime import input_names, make_session

    session = make_session(
        request["path"],
        request["provider"],
        request.get("intra_op_threads"),
        request.get("inter_op_threads", 1),
        request.get("settings"),
    )
    features, size = load_features(request["features"]), request["batch_size"]
    names, chunks = input_names(session), []
    for start in range(0, count(features), size):
        chunk = take(features, slice(start, start + size))
        output = session.run(None, named(tile(chunk, size), names))[0]
        chunks.append(output[: count(chunk)])
    return np.concatenate(chunks).argmax(axis=1).tolist()


def all_outputs(request: dict[str, Any]) -> list[str]:
    """Every output over the request's features (in the batches the model accepts), written to
    `request["out"]` as an .npz of arrays "0", "1", ...; returns the output names. What checks
    parity under a profile in the runtime build that will run it."""
    import numpy as np

    from onnxforge.batching import run_accepted
    from onnxforge.inputs import load as load_features
    from onnxforge.runtime import make_session

    session = make_session(
        request["path"],
        request["provider"],
        request.get("intra_op_threads"),
        request.get("inter_op_threads", 1),
        request.get("settings"),
    )
    outputs = run_accepted(session, load_features(request["features"]))
    np.savez(request["out"], **{str(i): output for i, output in enumerate(outputs)})
    return [output.name for output in session.get_outputs()]


def main() -> None:
    """Load the contender named by the first request, then time it whenever asked; end with the
    parent (a SIGKILLed parent must not leave this process measuring)."""
    import os

    from onnxforge.chatter import route_third_party_output
    from onnxforge.procs import watch_parent

    route_third_party_output()  # the parent's ONNXFORGE_VERBOSE: a crash's stderr tail stays short
    parent = int(os.environ.get(PARENT_ENV, os.getppid()))
    watch_parent(parent)  # the fallback where PR_SET_PDEATHSIG was not set or was missed
    if sys.argv[1:] == ["--argmax"]:  # score, not time: one request, one reply
        _reply({"ok": True, "argmax": first_output_argmax(json.loads(sys.stdin.readline()))})
        return
    if sys.argv[1:] == ["--outputs"]:  # parity under a profile: one request, one reply
        request = json.loads(sys.stdin.readline())
        try:
            _reply({"ok": True, "names": all_outputs(request)})
        except _tool_errors("onnx") as error:
            _reply(_failure(error))
        return
    request = json.loads(sys.stdin.readline())["load"]
    try:
        _serve(request)
    except Exception as error:
        # Not the tool's error: a bug in onnxforge. The parent raises it instead of recording it.
        _reply({**_failure(error), "bug": traceback.format_exc()[-2000:]})
        raise


if __name__ == "__main__":
    main()
