"""Latency of every contender on a provider, measured in interleaved rounds.

Contenders are this run's passing variants, the current champion (fetched and verified) and, in
one provider's rounds, the source framework. Each runs in its own fresh process
(onnxforge.bench_worker); the parent asks them in turn, round after round (A, B, C, A, B, C, ...),
so every contender sees the same moments of a noisy machine and ratios are taken within rounds.
Only one set of rounds runs at a time on the machine (a file lock in the system temp folder, not
per ONNXFORGE_HOME, so runs with different homes do not measure at the same time). A worker
dies with this process even on SIGKILL (onnxforge.procs), so it never measures on unlocked.
A batch size a contender cannot run (a model whose inputs fix the batch at another size) is an
`unsupported` row with the worker's reason, and that size is never asked of it.
A worker that does not answer in time is a `timeout` row, one that dies a `crashed` row; an
error in onnxforge's own code inside a worker raises StageError instead of becoming a row.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.adapters import get_adapter
from onnxforge.bench_worker import MARKER, PARENT_ENV
from onnxforge.data_record import DataRecord, read_splits
from onnxforge.errors import StageError
from onnxforge.inputs import save as save_features
from onnxforge.machine_lock import lock_path, machine_lock
from onnxforge.metrics import provider_short
from onnxforge.onnx_files import write_atomically
from onnxforge.procs import tied_command
from onnxforge.profiles import DEFAULT, RuntimeProfile, labelled, profiles_for
from onnxforge.providers import PROVIDERS
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import BenchContenders, BenchResult, ChampionRecord, ModelArtifact
from onnxforge.rounds import summarize
from onnxforge.variants import VARIANTS

LOAD_TIMEOUT_S = 300  # a session or a framework model that takes longer to load is 'timeout'
SEGMENT_TIMEOUT_S = 300  # one contender's timed runs within one round
SETTLE_S = 0.02  # lets the previous contender's thread pool go idle before the next one times


def baseline_name(framework: str) -> str:
    """The framework baseline's row name (and MLflow metric prefix) for a recipe's framework:
    its adapter names what its latency_callable runs."""
    return get_adapter(framework).baseline_name


def machine_lock_path() -> Path:
    """One lock for the whole machine: measurements of different runs never overlap."""
    return lock_path("bench")


@dataclass(frozen=True)
class Contender:
    """Something to time: its row name, where it comes from, and how its worker loads it.

    `python` is the interpreter its measuring process runs in: another runtime build (say a
    venv with onnxruntime-openvino, which installs the same `onnxruntime` module as the pinned
    build and so cannot share its environment) is timed in the same rounds as this one.
    """

    label: str
    source: str  # run | champion | framework
    load: dict[str, Any]
    size_bytes: int | None = None
    python: str = sys.executable
    profile: str = DEFAULT  # the runtime profile its session is built with

    @property
    def key(self) -> str:
        """Unique among one round's contenders: a variant may be timed under several profiles."""
        return labelled(self.label, self.profile)


def worker_command(python: str) -> tuple[str, ...]:
    """The measuring process in `python`: this interpreter, or another build's, which finds
    this checkout's onnxforge through PYTHONPATH (it needs numpy and onnxruntime, no torch)."""
    return (python, "-m", "onnxforge.bench_worker")


def worker_env(python: str) -> dict[str, str]:
    """The environment of a measuring process; another interpreter gets this package's folder
    on its PYTHONPATH."""
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    if python != sys.executable:
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class WorkerGone(RuntimeError):
    """The measuring process died, or did not answer in time; `status` says which."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Worker:
    """One contender's measuring process, in its own process group."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            tied_command(
                worker_command(contender.python)
            ),  # dies with this process, even on SIGKILL
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # a process group of its own, killed as one
            env=worker_env(contender.python),
        )
        self._buffer = ""

    def ask(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait for its reply; WorkerGone on death or timeout."""
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise self._gone() from None
        return self._read_reply(time.monotonic() + timeout_s, timeout_s)

    def _read_reply(self, deadline: float, timeout_s: float) -> dict[str, Any]:
        stdout = self._process.stdout
        while True:
            while "\n" in self._buffer:  # only '\n' ends a line: a library's '\r' must not
                line, _, self._buffer = self._buffer.partition("\n")
                if line.startswith(MARKER):
                    return json.loads(line[len(MARKER) :])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise WorkerGone("timeout", f"no answer within {timeout_s:.0f} s; killed")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout.fileno(), 1 << 16).decode(errors="replace")
                if not chunk:
                    raise self._gone()
                self._buffer += chunk

    def _gone(self) -> WorkerGone:
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # closed its output but did not exit
            self.close()
            return WorkerGone(
                "crashed", f"worker closed its output and hung; killed: {self._stderr_tail()}"
            )
        how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
        return WorkerGone("crashed", f"worker {how}: {self._stderr_tail()}")

    def check_bug(self, reply: dict[str, Any], provider: str) -> dict[str, Any]:
        """The reply, unless the worker hit a bug in onnxforge: that raises, it is not a result."""
        if "bug" in reply:
            self.close()
            raise StageError(
                "benchmark",
                f"onnxforge bug in the measuring process: {reply['bug']}",
                self.contender.label,
                provider,
            )
        return reply

    def _stderr_tail(self) -> str:
        if self._stderr.closed:
            return "no output"
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-1:]
        return (tail or ["no output"])[0][:300]

    def close(self) -> None:
        """End the process group and reap it (idempotent)."""
        if self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)  # the group this class created
            except ProcessLookupError:
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel; the SIGKILL ends it when it returns
        if not self._stderr.closed:
            self._stderr.close()


def _base(contender: Contender, provider: str, spec: BenchmarkSpec) -> dict[str, Any]:
    return {
        "variant": contender.label,
        "profile": contender.profile,
        "provider": "framework" if contender.source == "framework" else provider,
        "source": contender.source,
        "group": provider,
        "size_bytes": contender.size_bytes,
        "intra_op_threads": spec.intra_op_threads,
        "inter_op_threads": spec.inter_op_threads,
    }


def measure_interleaved(
    contenders: list[Contender], provider: str, spec: BenchmarkSpec, lock_path: Path
) -> list[BenchResult]:
    """Every contender at every batch size, `spec.rounds` interleaved rounds; one row each."""
    with machine_lock(lock_path):
        workers: dict[str, Worker] = {}
        try:
            return _run_rounds(contenders, provider, spec, workers)
        finally:
            for worker in workers.values():
                worker.close()


def _run_rounds(
    contenders: list[Contender], provider: str, spec: BenchmarkSpec, workers: dict[str, Worker]
) -> list[BenchResult]:
    results: dict[tuple[str, int], BenchResult] = {}
    loaded: dict[str, dict[str, Any]] = {}
    refused: dict[str, dict[int, str]] = {}  # batch sizes a contender cannot run, with why
    for contender in contenders:
        base = _base(contender, provider, spec)
        worker = workers[contender.key] = Worker(contender)
        try:
            reply = worker.check_bug(worker.ask({"load": contender.load}, LOAD_TIMEOUT_S), provider)
        except WorkerGone as gone:
            reply = {"ok": False, "error": str(gone), "status": gone.status}
        if reply["ok"]:
            loaded[contender.key] = {"session_ms": reply["session_ms"], **base}
            refused[contender.key] = {int(s): r for s, r in reply.get("unsupported", {}).items()}
            continue
        worker.close()
        del workers[contender.key]
        for size in spec.batch_sizes:
            results[(contender.key, size)] = BenchResult(
                **base,
                batch_size=size,
                status=reply.get("status", "unsupported"),
                reason=reply["error"],
            )
    gone: dict[str, tuple[str, str]] = {}  # workers that hung or died: no later batch size
    for size in spec.batch_sizes:
        runs = {label: size not in refused.get(label, {}) for label in loaded}
        for label in [label for label, ok in runs.items() if not ok]:  # never asked at this size
            results[(label, size)] = _refused_row(loaded[label], size, refused[label][size])
        asked = {label: worker for label, worker in workers.items() if runs[label]}
        measured = {label: entry for label, entry in loaded.items() if runs[label]}
        results.update(_rounds_for_batch(size, provider, spec, asked, measured, gone))
    return [results[(c.key, s)] for c in contenders for s in spec.batch_sizes]


def _refused_row(loaded: dict[str, Any], size: int, reason: str) -> BenchResult:
    """An 'unsupported' row for a batch size the contender's worker said it cannot run."""
    base = {k: v for k, v in loaded.items() if k != "session_ms"}
    return BenchResult(**base, batch_size=size, status="unsupported", reason=reason)


def _rounds_for_batch(
    size: int,
    provider: str,
    spec: BenchmarkSpec,
    workers: dict[str, Worker],
    loaded: dict[str, dict[str, Any]],
    gone: dict[str, tuple[str, str]],
) -> dict[tuple[str, int], BenchResult]:
    timings: dict[str, list[float]] = {label: [] for label in workers}
    round_p50: dict[str, list[float]] = {label: [] for label in workers}
    failed: dict[str, tuple[str, str]] = dict(gone)
    peak: dict[str, float] = {}
    ask = {"batch_size": size, "iterations": spec.iterations, "time_budget_s": spec.time_budget_s}
    for round_index in range(spec.rounds):
        live = [label for label in workers if label not in failed]
        shift = round_index % len(live) if live else 0
        for label in live[shift:] + live[:shift]:  # rotate: nobody always goes first
            try:
                reply = workers[label].check_bug(
                    workers[label].ask(ask, SEGMENT_TIMEOUT_S), provider
                )
            except WorkerGone as error:
                workers.pop(label).close()
                failed[label] = gone[label] = (error.status, f"at bs{size}: {error}")
                continue
            if not reply["ok"]:
                failed[label] = ("unsupported", reply["error"])
                continue
            timings[label] += reply["timings_ms"]
            round_p50[label].append(float(np.median(reply["timings_ms"])))
            peak[label] = reply["peak_rss_increase_mb"]
            time.sleep(SETTLE_S)
    rows = {}
    for label in loaded:
        base = {k: v for k, v in loaded[label].items() if k != "session_ms"}
        if label in failed:
            status, reason = failed[label]
            rows[(label, size)] = BenchResult(**base, batch_size=size, status=status, reason=reason)
            continue
        stats = summarize(timings[label], size)
        per_round = np.asarray(round_p50[label])
        round_cv = float(per_round.std() / per_round.mean()) if per_round.mean() else 0.0
        rows[(label, size)] = BenchResult(
            **base,
            batch_size=size,
            status="ok",
            session_ms=loaded[label]["session_ms"],
            peak_rss_increase_mb=peak[label],
            rounds=len(round_p50[label]),
            round_p50_ms=tuple(round_p50[label]),
            round_cv=round_cv,
            noisy=round_cv > spec.max_cv,
            **stats,
        )
    return rows


def onnx_load(
    path: str, provider: str, spec: BenchmarkSpec, features: Path, settings: dict | None = None
) -> dict[str, Any]:
    """The load request of an ONNX contender: its file on `provider`, with the benchmark's
    threads and, optionally, session settings (onnxforge.runtime.SETTING_KEYS)."""
    return {
        "kind": "onnx",
        "path": path,
        "provider": provider,
        "settings": settings or {},
        **common_load(spec, features),
    }


def common_load(spec: BenchmarkSpec, features: Path) -> dict[str, Any]:
    return {
        "features": str(features),
        "batch_sizes": list(spec.batch_sizes),
        "warmup": spec.warmup,
        "intra_op_threads": spec.intra_op_threads,
        "inter_op_threads": spec.inter_op_threads,
    }


def contender_argmax(contender: Contender, features: Path, batch_size: int) -> list[int]:
    """The argmax of an ONNX contender's first output over `features`, computed in its own
    interpreter with its own session settings (an untimed process of its own)."""
    request = {**contender.load, "features": str(features), "batch_size": batch_size}
    reply = one_shot(contender, "--argmax", request, "scoring")
    return reply["argmax"]


def one_shot(contender: Contender, mode: str, request: dict[str, Any], what: str) -> dict:
    """One request to a fresh `bench_worker <mode>` process in the contender's interpreter; its
    reply, or StageError("benchmark") naming the contender and provider when it failed."""
    result = subprocess.run(
        tied_command([*worker_command(contender.python), mode]),
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        env=worker_env(contender.python),
        timeout=LOAD_TIMEOUT_S,
    )
    replies = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    if result.returncode != 0 or not replies:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise StageError(
            "benchmark", f"{what} failed: {tail}", contender.label, contender.load["provider"]
        )
    return json.loads(replies[-1][len(MARKER) :])


def not_measured(
    who: tuple[str, str, int | None], provider: str, spec: BenchmarkSpec, status: str, reason: str
) -> list[BenchResult]:
    """One row per batch size for a contender that was not measured, with `status` and why;
    `who` is its (row name, source, size in bytes)."""
    label, source, size = who
    return [
        BenchResult(
            variant=label,
            provider="framework" if source == "framework" else provider,
            source=source,
            group=provider,
            size_bytes=size,
            batch_size=s,
            status=status,
            reason=reason,
        )
        for s in spec.batch_sizes
    ]


def bench_provider(
    recipe: Recipe,
    provider: str,
    contenders: BenchContenders,
    features: Path,
    data: DataRecord,
) -> list[BenchResult]:
    """This run's passing variants, the verified champions and, in the baseline provider's
    rounds, the framework, interleaved on one provider; the rest are rows with their reasons.
    The baseline's worker reads the splits from `data` (the run's DataRecord), sha256-checked."""
    baseline = None
    if holds_baseline(recipe.benchmark, provider):
        load = framework_baseline(recipe.to_data(), contenders.trained.checkpoint, data)
        baseline = (baseline_name(recipe.model.framework), load)
    runs = profiled_runs(recipe.benchmark, provider, contenders.artifacts, contenders.passed)
    champions = list(contenders.champions)
    return bench_contenders(recipe.benchmark, provider, runs, champions, baseline, features)


def profiled_runs(
    spec: BenchmarkSpec,
    provider: str,
    artifacts: Sequence[ModelArtifact],
    passed: Sequence[tuple[str, str]] = (),
) -> list[tuple[ModelArtifact, RuntimeProfile]]:
    """Every (variant, profile) pair timed on `provider`: the profiles that apply to the file
    there (onnxforge.profiles.profiles_for) among the (variant, profile) pairs that passed
    parity; `passed` empty: every pair that applies."""
    return [
        (artifact, profile)
        for artifact in artifacts
        for profile in profiles_for(spec.profiles, artifact.path, provider)
        if not passed or (artifact.variant, profile.name) in passed
    ]


def framework_baseline(recipe: dict[str, Any], checkpoint: str, data: DataRecord) -> dict[str, Any]:
    """How the baseline's measuring process rebuilds the source model (the recipe as data)."""
    return {
        "kind": "framework",
        "checkpoint": checkpoint,
        "recipe": recipe,
        "data": {"path": data.path, "sha256": data.sha256},
    }


def bench_contenders(
    spec: BenchmarkSpec,
    provider: str,
    runs: list[tuple[ModelArtifact, RuntimeProfile]],
    champions: list[ChampionRecord],
    baseline: tuple[str, dict[str, Any]] | None,
    features: Path,
) -> list[BenchResult]:
    """`bench_provider` once the (variant, profile) pairs are chosen and the baseline, if any,
    is a (row name, load request) pair."""
    provider_spec = PROVIDERS[provider]
    unavailable = provider_spec.unavailable_reason()
    candidates = [
        (a.variant, "run", a.path, a.size_bytes, a.variant, p.name, p.settings(), p.python)
        for a, p in runs
    ]
    candidates += [_champion_candidate(c, provider) for c in champions if c.path is not None]
    rows: list[BenchResult] = []
    contenders: list[Contender] = []
    for label, source, path, size, variant, profile, settings, python in candidates:
        device = VARIANTS[variant].device if variant in VARIANTS else "any"
        who = (label, source, size)
        if unavailable is not None:
            rows += _named(not_measured(who, provider, spec, "skipped", unavailable), profile)
        elif not provider_spec.can_run(device):
            reason = f"{variant} is a GPU variant; {provider} has no kernels for it"
            rows += _named(not_measured(who, provider, spec, "unsupported", reason), profile)
        elif python and not Path(python).is_file():  # a dispatched host may lack the build
            reason = f"profile {profile}: interpreter {python} is not on this host"
            rows += _named(not_measured(who, provider, spec, "unsupported", reason), profile)
        else:
            load = onnx_load(path, provider, spec, features, settings)
            contenders.append(
                Contender(label, source, load, size, python or sys.executable, profile)
            )
    if baseline is not None:
        label, load = baseline
        if unavailable is not None:  # a row all the same: a dispatched provider must cover it
            who = (label, "framework", None)
            rows += not_measured(who, provider, spec, "skipped", unavailable)
        else:
            load = {**load, **common_load(spec, features)}
            contenders.append(Contender(label, "framework", load))
    if contenders:
        rows += measure_interleaved(contenders, provider, spec, machine_lock_path())
    return rows


def _named(rows: list[BenchResult], profile: str) -> list[BenchResult]:
    return [row.model_copy(update={"profile": profile}) for row in rows]


def _champion_candidate(champion: ChampionRecord, provider: str) -> tuple:
    """A champion is timed under the profile its version was deployed with on `provider`
    (another runtime build's interpreter only when it is on this host), else ONNX Runtime's
    defaults."""
    profile = champion.profiles.get(provider_short(provider), {})
    python = (profile.get("runtime") or {}).get("python")
    python = python if python and Path(python).is_file() else None
    return (
        champion.label,
        "champion",
        champion.path,
        None,
        champion.variant,
        profile.get("name", DEFAULT),
        profile.get("settings") or {},
        python,
    )


def baseline_provider(spec: BenchmarkSpec) -> str:
    """The provider whose rounds include the framework baseline: CPU when requested."""
    providers = spec.providers
    return "CPUExecutionProvider" if "CPUExecutionProvider" in providers else providers[0]


def holds_baseline(spec: BenchmarkSpec, provider: str) -> bool:
    """Whether `provider`'s rounds include the framework baseline."""
    return spec.baseline and provider == baseline_provider(spec)


def benchmark_inputs(data: DataRecord, work_dir: Path) -> Path:
    """The run's test-split inputs as an .npz file that every measuring process reads."""
    path = work_dir / "bench_features.npz"
    if not path.exists():
        features = read_splits(data).x_test
        write_atomically(path, lambda temp: save_features(features, temp))
    return path
