"""The interleaved benchmark harness: real ORT sessions and a real PyTorch baseline in fresh
processes, rounds, intervals, noise flags, and workers that hang or crash."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxforge.benchmark import Contender, bench_provider, measure_interleaved, onnx_load
from onnxforge.recipe import BenchmarkSpec, load_recipe
from onnxforge.records import BenchResult, ChampionRecord
from onnxforge.rounds import compare, ratio_interval, summarize, with_speedups
from tests.conftest import DEFAULT_RECIPE, data_of

SPEC = BenchmarkSpec(warmup=2, rounds=4, iterations=10, batch_sizes=[1, 4], intra_op_threads=1)


def _matmul_model(path: Path, width: int) -> Path:
    """x[batch, 64] @ w[64, width]: a real ONNX file whose cost grows with `width`."""
    weight = numpy_helper.from_array(np.ones((64, width), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def features(tmp_path: Path) -> Path:
    from onnxforge.inputs import save

    path = tmp_path / "features.npz"
    save(np.random.default_rng(0).random((8, 64), dtype=np.float32), path)
    return path


def _contender(name: str, path: Path, features: Path, spec: BenchmarkSpec = SPEC) -> Contender:
    return Contender(name, "run", onnx_load(str(path), "CPUExecutionProvider", spec, features))


def test_rounds_interleave_contenders_and_rows_have_sane_relations(
    tmp_path: Path, features: Path
) -> None:
    small = _matmul_model(tmp_path / "small.onnx", 8)
    big = _matmul_model(tmp_path / "big.onnx", 4096)
    rows = measure_interleaved(
        [_contender("small", small, features), _contender("big", big, features)],
        "CPUExecutionProvider",
        SPEC,
        tmp_path / "lock",
    )
    assert [(r.variant, r.batch_size) for r in rows] == [
        ("small", 1),
        ("small", 4),
        ("big", 1),
        ("big", 4),
    ]
    for row in rows:
        assert row.status == "ok", row.reason
        assert 0 < row.p50_ms <= row.p90_ms <= row.p99_ms
        assert row.rounds == 4 and len(row.round_p50_ms) == 4
        assert row.iterations == 40  # 10 timed runs in each of 4 rounds
        assert row.throughput == pytest.approx(row.batch_size * 1000 / row.mean_ms)
        assert row.session_ms > 0 and row.group == "CPUExecutionProvider"
    # 512x the work per call: the same-run ratio says `small` is faster, interval included
    comparison = compare(rows[1], rows[3])
    assert comparison is not None and comparison.low > 1.0


def test_a_provider_that_rejects_a_model_is_a_row(tmp_path: Path, features: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    rows = measure_interleaved(
        [_contender("broken", broken, features)], "CPUExecutionProvider", SPEC, tmp_path / "l"
    )
    assert {r.status for r in rows} == {"unsupported"}
    assert "CPUExecutionProvider rejected" in rows[0].reason


def test_a_hanging_worker_times_out_and_a_crashing_one_is_crashed(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxforge.benchmark as benchmark

    model = _matmul_model(tmp_path / "m.onnx", 8)
    # Real processes, started as the harness starts its workers, that hang or die on load.
    monkeypatch.setattr(benchmark, "LOAD_TIMEOUT_S", 3)
    for body, status in (
        ("import time; time.sleep(600)", "timeout"),
        ("import os; os.kill(os.getpid(), 9)", "crashed"),
    ):
        monkeypatch.setattr(
            benchmark, "worker_command", lambda _python, body=body: (sys.executable, "-c", body)
        )
        rows = measure_interleaved(
            [_contender("m", model, features)], "CPUExecutionProvider", SPEC, tmp_path / "l"
        )
        assert {r.status for r in rows} == {status}, rows[0].reason
    assert "killed by signal 9" in rows[0].reason


def test_a_worker_that_hangs_mid_rounds_is_killed_and_every_batch_size_says_so(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxforge.benchmark as benchmark

    model = _matmul_model(tmp_path / "m.onnx", 8)
    # Loads (answers the protocol's first request), then never answers a measurement.
    body = (
        "import sys, json, time; sys.stdin.readline(); "
        "print('\\n@@onnxforge-bench ' + json.dumps({'ok': True, 'session_ms': 1.0}), flush=True); "
        "sys.stdin.readline(); time.sleep(600)"
    )
    monkeypatch.setattr(benchmark, "SEGMENT_TIMEOUT_S", 2)
    monkeypatch.setattr(
        benchmark, "worker_command", lambda _python, body=body: (sys.executable, "-c", body)
    )
    rows = measure_interleaved(
        [_contender("m", model, features)], "CPUExecutionProvider", SPEC, tmp_path / "l"
    )
    assert [(r.batch_size, r.status) for r in rows] == [(1, "timeout"), (4, "timeout")]
    assert all(r.reason.startswith("at bs1: no answer within 2 s") for r in rows)


def test_a_worker_that_segfaults_mid_rounds_is_crashed_not_unsupported(
    tmp_path: Path, features: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxforge.benchmark as benchmark

    model = _matmul_model(tmp_path / "m.onnx", 8)
    # Loads, then dereferences NULL on the first measurement: a real SIGSEGV.
    body = (
        "import sys, json, ctypes; sys.stdin.readline(); "
        "print('\\n@@onnxforge-bench ' + json.dumps({'ok': True, 'session_ms': 1.0}), flush=True); "
        "sys.stdin.readline(); ctypes.string_at(0)"
    )
    monkeypatch.setattr(
        benchmark, "worker_command", lambda _python, body=body: (sys.executable, "-c", body)
    )
    rows = measure_interleaved(
        [_contender("m", model, features)], "CPUExecutionProvider", SPEC, tmp_path / "l"
    )
    assert [r.status for r in rows] == ["crashed", "crashed"]
    assert "killed by signal 11" in rows[0].reason


def test_a_bug_in_onnxforge_inside_the_worker_raises_instead_of_becoming_a_row(
    tmp_path: Path, features: Path
) -> None:
    from onnxforge.errors import StageError

    model = _matmul_model(tmp_path / "m.onnx", 8)
    contender = _contender("m", model, features)
    # A request our own code cannot handle (warmup must be an int): a TypeError in onnxforge.
    broken = Contender("m", "run", {**contender.load, "warmup": "2"})
    with pytest.raises(StageError, match="(?s)onnxforge bug in the measuring process.*TypeError"):
        measure_interleaved([broken], "CPUExecutionProvider", SPEC, tmp_path / "l")


def test_parity_records_what_ort_refuses_and_raises_our_own_bugs(
    tmp_path: Path, digits_recipe
) -> None:
    from onnxforge.parity import check_variant
    from onnxforge.records import ModelArtifact

    def artifact(path: Path) -> ModelArtifact:
        return ModelArtifact(
            path=str(path), sha256="0", variant="fp32", parent=None, producer="t", opset=17,
            size_bytes=path.stat().st_size,
        )  # fmt: skip

    model = artifact(_matmul_model(tmp_path / "m.onnx", 8))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    good = np.ones((4, 64), np.float32)
    # ORT refuses: a file it cannot load, an input of the wrong width. Both are typed results.
    for target, features in ((artifact(broken), good), (model, np.ones((4, 3), np.float32))):
        result = check_variant(digits_recipe, target, features, None, [np.ones((4, 8))])
        assert not result.passed and result.failures[0].kind == "not_run"
    # Our bug (features named for an input the model does not have): raises, is not a result.
    with pytest.raises(KeyError, match="no input data"):
        check_variant(digits_recipe, model, {"nope": good}, None, [np.ones((4, 8))])


def test_a_worker_dies_with_its_parent_when_the_parent_is_killed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    # A parent that starts a worker the way the harness does (which then sleeps), then waits.
    parent_code = (
        "import sys, time, onnxforge.benchmark as b; "
        f"b.worker_command = lambda python: ({sys.executable!r}, '-c', 'import time; time.sleep(600)'); "
        "w = b.Worker(b.Contender('x', 'run', {})); print(w._process.pid, flush=True); "
        "time.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    worker_pid = int(parent.stdout.readline())
    os.kill(worker_pid, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    assert not _alive(worker_pid), "the worker outlived its SIGKILLed parent"


def test_a_worker_without_the_kernel_tie_still_ends_when_its_parent_dies(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    # The worker is started bare (no PR_SET_PDEATHSIG); its stdin is a pipe this test keeps
    # open, so it waits for a request forever unless its parent-pid watch ends it.
    parent_code = (
        "import os, subprocess, sys, time; "
        "w = subprocess.Popen([sys.executable, '-m', 'onnxforge.bench_worker'], "
        "env={**os.environ, 'ONNXFORGE_BENCH_PARENT': str(os.getpid())}); "
        "print(w.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker_pid = int(parent.stdout.readline())
    time.sleep(1.0)  # let the worker start its watch
    assert _alive(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    alive = _alive(worker_pid)
    parent.stdin.close()
    assert not alive, "the worker outlived its parent"


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a reaped-later zombie is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_rows_whose_rounds_disagree_beyond_max_cv_are_flagged_noisy(
    tmp_path: Path, features: Path
) -> None:
    model = _matmul_model(tmp_path / "m.onnx", 8)
    strict = SPEC.model_copy(update={"max_cv": 1e-9, "batch_sizes": [1]})
    lenient = SPEC.model_copy(update={"max_cv": 1e9, "batch_sizes": [1]})
    for spec, noisy in ((strict, True), (lenient, False)):
        (row,) = measure_interleaved(
            [_contender("m", model, features, spec)], "CPUExecutionProvider", spec, tmp_path / "l"
        )
        assert row.noisy is noisy and row.round_cv is not None and row.round_cv >= 0


def test_framework_baseline_joins_the_rounds_and_gives_interval_speedups(
    tmp_path: Path,
) -> None:
    from onnxforge.benchmark import benchmark_inputs
    from onnxforge.export import export_model
    from onnxforge.records import BenchContenders
    from onnxforge.training import train_model

    quick = {
        "train.epochs": "1",
        "benchmark.warmup": "1",
        "benchmark.iterations": "5",
        "benchmark.rounds": "3",
        "benchmark.batch_sizes": "[1]",
    }
    recipe = load_recipe(DEFAULT_RECIPE, quick)
    data = data_of(recipe)
    trained = train_model(recipe, tmp_path, lambda *_: None, data)
    fp32 = export_model(recipe, trained.checkpoint, tmp_path, data)
    features = benchmark_inputs(data, tmp_path)
    champion = ChampionRecord(
        version="7",
        aliases=("champion",),
        variant="fp32",
        sha256=fp32.sha256,
        path=fp32.path,
        verified=True,
    )
    contenders = BenchContenders(trained=trained, artifacts=(fp32,), champions=(champion,))
    rows = bench_provider(recipe, "CPUExecutionProvider", contenders, features, data)
    assert [(r.variant, r.source, r.status) for r in rows] == [
        ("fp32", "run", "ok"),
        ("champion-v7", "champion", "ok"),
        ("pytorch-eager", "framework", "ok"),
    ], [r.reason for r in rows]
    rows = with_speedups(rows)
    assert rows[0].speedup_low <= rows[0].speedup <= rows[0].speedup_high
    assert rows[2].speedup is None  # the baseline has no speedup over itself
    alone = BenchContenders(trained=trained, artifacts=(fp32,))
    skipped = bench_provider(recipe, "CUDAExecutionProvider", alone, features, data)
    assert {r.status for r in skipped} == {"skipped"}
    assert "CUDAExecutionProvider is not in this onnxruntime" in skipped[0].reason


def test_ratio_interval_is_seeded_and_brackets_the_median() -> None:
    reference = (2.0, 2.2, 1.9, 2.1, 2.0, 2.05)
    contender = (1.0, 1.0, 1.0, 1.1, 0.95, 1.0)
    ratio, low, high = ratio_interval(reference, contender)
    assert low <= ratio <= high and 1.8 < ratio < 2.2
    assert ratio_interval(reference, contender) == (ratio, low, high)


def test_a_row_that_varies_between_rounds_is_noisy_and_compares_as_noisy() -> None:
    def row(name: str, rounds: tuple[float, ...], noisy: bool) -> BenchResult:
        return BenchResult(
            variant=name,
            provider="CPUExecutionProvider",
            batch_size=1,
            status="ok",
            p50_ms=float(np.median(rounds)),
            round_p50_ms=rounds,
            noisy=noisy,
            group="CPUExecutionProvider",
        )

    calm = row("a", (1.0, 1.0, 1.0), False)
    wild = row("b", (1.0, 14.0, 1.0), True)
    assert compare(calm, wild).noisy
    other_rounds = calm.model_copy(update={"group": "CUDAExecutionProvider"})
    assert compare(other_rounds, wild) is None  # rows from other rounds are never compared


def test_summarize_orders_percentiles_and_counts() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0], batch_size=2)
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] and stats["iterations"] == 5
