"""One measurement in a fresh process: `python -m onnxforge.bench_worker < request.json`.

A fresh interpreter per (variant, provider, batch size) keeps one measurement's allocations,
thread pools and caches from colouring the next; the parent holds a machine-wide lock so only
one measurement runs at a time.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from onnxforge.benchmark import latency_stats
from onnxforge.inputs import Features, load, named, tile


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _onnx_call(request: dict[str, Any], batch: Features) -> Any:
    from onnxforge.runtime import make_session

    session = make_session(
        request["path"],
        request["provider"],
        request["intra_op_threads"],
        request["inter_op_threads"],
    )
    feed = named(batch, [graph_input.name for graph_input in session.get_inputs()])
    return lambda: session.run(None, feed)


def _framework_call(request: dict[str, Any], batch: Features) -> Any:
    from onnxforge.adapters import get_adapter
    from onnxforge.datasets import load_splits
    from onnxforge.recipe import Recipe
    from onnxforge.training import load_source_model

    recipe = Recipe.model_validate(request["recipe"])
    adapter = get_adapter(recipe.model.framework)
    adapter.set_threads(request["intra_op_threads"])  # before the framework starts its runtime
    model = load_source_model(recipe, request["checkpoint"], load_splits(recipe.dataset))
    return adapter.latency_callable(model, batch)


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Create the session (or model), warm up, time; returns the numbers as a dict."""
    batch = tile(load(request["features"]), request["batch_size"])
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    make_call = _framework_call if request["kind"] == "framework" else _onnx_call
    call = make_call(request, batch)
    session_ms = (time.perf_counter() - started) * 1000.0
    stats = latency_stats(
        call,
        request["warmup"],
        request["iterations"],
        request["batch_size"],
        request.get("time_budget_s"),
    )
    return {**stats, "session_ms": session_ms, "peak_rss_increase_mb": _peak_rss_mb() - rss_before}


def main() -> None:
    """Read one JSON request from stdin, print one JSON result (or an error) to stdout."""
    request = json.loads(sys.stdin.read())
    try:
        result = {"ok": True, **measure(request)}
    except Exception as error:  # noqa: BLE001 - the parent turns this into an 'unsupported' row
        result = {"ok": False, "error": f"{type(error).__name__}: {str(error).strip()[:400]}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
