"""A benchmark measured on another host: what travels there, and what comes back.

The flow that runs a recipe ships every file a provider's rounds need (this run's passing
variants, the verified champions, the benchmark inputs and, for the framework baseline, the
checkpoint and the data) into its MLflow run under `benchmark/dispatch/<provider>/`, and sends
a DispatchRequest that names them by MLflow artifact URI and sha256, never by local path. The
worker downloads each file, refuses any whose sha256 differs (a `refused` row: not measured),
measures the rest with the same harness as a local benchmark (onnxforge.benchmark) and writes
its rows into the same run as `benchmark/dispatched/<provider>.json`. Rows travel through
MLflow, not through Prefect results: a process worker keeps its results on its own disk.

No Prefect here: tasks/dispatch.py starts and watches the flow run, flows/bench_dispatch.py is
the flow the worker runs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from onnxforge.benchmark import (
    baseline_name,
    bench_contenders,
    framework_baseline,
    not_measured,
    profiled_runs,
)
from onnxforge.data_record import DataRecord
from onnxforge.errors import IntegrityError
from onnxforge.onnx_files import external_data_files, sha256_of
from onnxforge.recipe import BenchmarkSpec, Recipe
from onnxforge.records import BenchResult, ChampionRecord, ModelArtifact, Record

BENCH_FLOW = "onnx-benchmark"
# The worker imports the flow from the installed package: a process worker runs each flow run
# in a new temporary folder, so nothing of the dispatching machine's checkout is needed there.
BENCH_ENTRYPOINT = "flows.bench_dispatch:benchmark_dispatched"
# A Prefect worker hands its name to the flow runs it starts in this variable (Prefect 3.9,
# BaseWorker._base_attribution_environment): it is recorded on each row the worker measures.
WORKER_NAME_ENV = "PREFECT__WORKER_NAME"
WORKER_TAG_PREFIX = "onnxforge-worker:"  # the measuring flow run's tag naming its worker


class ShippedFile(Record):
    """A file in the run's artifacts: where it is and what it must hash to."""

    uri: str  # runs:/<run id>/<artifact path>
    sha256: str


# Row names become folder names on the worker: variants, champion-v<N>, the baseline's name.
SAFE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def _safe_label(label: str) -> str:
    if not SAFE_LABEL.fullmatch(label) or ".." in label:
        raise ValueError(f"not a row name: {label!r}")
    return label


class DispatchRequest(Record):
    """Everything a worker needs to measure one provider's rounds, by URI and sha256.

    In a request, `path` on the artifacts, champions and data record holds the file's artifact
    URI; the worker replaces it with the path of its verified download. The worker takes the
    tracking server from its own environment, never from a request.
    """

    benchmark: BenchmarkSpec
    framework: str  # the recipe's, for the baseline's row name
    provider: str
    pool: str
    run_id: str
    artifacts: tuple[ModelArtifact, ...]
    champions: tuple[ChampionRecord, ...]
    features: ShippedFile
    passed: tuple[tuple[str, str], ...] = ()  # (variant, profile) pairs to time; empty: all
    # An artifact's external-data files: row name -> path relative to the .onnx file -> sha256.
    external_data: dict[str, dict[str, str]] = {}
    # The framework baseline, when these rounds hold it: the recipe as data (by alias:
    # `register`), which the worker must be able to build (its model files and code there too).
    recipe: dict[str, Any] | None = None
    checkpoint: ShippedFile | None = None
    data: DataRecord | None = None

    @model_validator(mode="after")
    def _labels_are_names(self) -> DispatchRequest:
        for label in [a.variant for a in self.artifacts] + [c.label for c in self.champions]:
            _safe_label(label)
        for files in self.external_data.values():
            for relative in files:
                if Path(relative).is_absolute() or ".." in Path(relative).parts:
                    raise ValueError(f"external data outside the model's folder: {relative!r}")
        return self

    @property
    def result_path(self) -> str:
        return result_path(self.provider)


def result_path(provider: str) -> str:
    """Where the worker writes its rows in the run's artifacts."""
    return f"benchmark/dispatched/{provider}.json"


def expected_contenders(request: DispatchRequest) -> list[tuple[str, str, int | None]]:
    """(row name, source, size) of every contender the request asks for, in measuring order."""
    contenders = [(a.variant, "run", a.size_bytes) for a in request.artifacts]
    contenders += [(c.label, "champion", c.size_bytes) for c in request.champions]
    if request.checkpoint is not None:
        contenders.append((baseline_name(request.framework), "framework", None))
    return contenders


def unmeasured_rows(
    request: DispatchRequest, status: str, reason: str, where: dict[str, str] | None = None
) -> list[BenchResult]:
    """One row per contender and batch size, none measured, each with `status` and `reason`."""
    spec, provider = request.benchmark, request.provider
    return [
        row.model_copy(update=where or {})
        for label, source, size in expected_contenders(request)
        for row in not_measured((label, source, size), provider, spec, status, reason)
    ]


# The sending side ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundFiles:
    """The local files one provider's rounds measure: this run's variants, the verified
    champions, the benchmark inputs and, when these rounds hold the framework baseline, the
    checkpoint as (path, sha256) and the data record it trains on."""

    artifacts: list[ModelArtifact]
    champions: list[ChampionRecord]
    features: Path
    checkpoint: tuple[str, str] | None = None
    data: DataRecord | None = None
    passed: tuple[tuple[str, str], ...] = ()  # (variant, profile) pairs that passed parity


def ship_request(
    recipe: Recipe,
    provider: str,
    pool: str,
    files: RoundFiles,
    mlflow_client: Any,
    run_id: str,
) -> DispatchRequest:
    """Upload `files` for `provider`'s rounds into the run and describe them by URI."""
    artifacts, champions, features = files.artifacts, files.champions, files.features
    checkpoint, data = files.checkpoint, files.data
    folder = f"benchmark/dispatch/{provider}"

    def ship(label: str, path: str | Path, sha256: str) -> str:
        target = f"{folder}/{label}"
        mlflow_client.log_artifact(run_id, str(path), target)
        return f"runs:/{run_id}/{target}/{Path(path).name}"

    external_data = {}
    for artifact in artifacts:  # external data keeps its place relative to the .onnx file
        home = Path(artifact.path).parent
        companions = {str(f.relative_to(home)): f for f in external_data_files(artifact.path)}
        for relative, file in companions.items():
            subfolder = str(Path(relative).parent).removeprefix(".")
            target = f"{folder}/{artifact.variant}" + (f"/{subfolder}" if subfolder else "")
            mlflow_client.log_artifact(run_id, str(file), target)
        if companions:
            external_data[artifact.variant] = {r: sha256_of(f) for r, f in companions.items()}
    shipped_artifacts = tuple(
        a.model_copy(update={"path": ship(a.variant, a.path, a.sha256)}) for a in artifacts
    )
    shipped_champions = tuple(
        c.model_copy(update={"path": ship(c.label, c.path, c.sha256)})
        for c in champions
        if c.path is not None
    )
    features_sha = sha256_of(features)
    shipped_features = ShippedFile(uri=ship("inputs", features, features_sha), sha256=features_sha)
    shipped_checkpoint = shipped_data = None
    if checkpoint is not None:
        path, sha = checkpoint
        shipped_checkpoint = ShippedFile(uri=ship("checkpoint", path, sha), sha256=sha)
        if data is not None:
            shipped_data = data.model_copy(update={"path": ship("data", data.path, data.sha256)})
    return DispatchRequest(
        benchmark=recipe.benchmark,
        framework=recipe.model.framework,
        provider=provider,
        pool=pool,
        run_id=run_id,
        artifacts=shipped_artifacts,
        champions=shipped_champions,
        passed=files.passed,
        features=shipped_features,
        external_data=external_data,
        recipe=None if checkpoint is None else recipe.to_data(),
        checkpoint=shipped_checkpoint,
        data=shipped_data,
    )


def read_rows(
    mlflow_client: Any, request: DispatchRequest, flow_run_id: str
) -> tuple[list[BenchResult], float]:
    """The rows the worker of flow run `flow_run_id` wrote, and how long the worker took to
    fetch and measure; ValueError when they are not that run's, or do not cover exactly the
    contenders the request asked for."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="onnxforge-dispatched-") as scratch:
        local = mlflow.artifacts.download_artifacts(
            run_id=request.run_id,
            artifact_path=request.result_path,
            dst_path=scratch,
            tracking_uri=mlflow_client.tracking_uri,
        )
        document = json.loads(Path(local).read_text())
    if document.get("flow_run_id") != flow_run_id:
        raise ValueError(
            f"{request.result_path} was written by flow run {document.get('flow_run_id')}, "
            f"not by {flow_run_id}"
        )
    rows = [BenchResult.model_validate(row) for row in document["rows"]]
    sizes = request.benchmark.batch_sizes
    asked = sorted((label, size) for label, _, _ in expected_contenders(request) for size in sizes)
    got = sorted((row.variant, row.batch_size) for row in rows)
    if got != asked or any(row.group != request.provider for row in rows):
        raise ValueError(
            f"{request.result_path} holds rows for {got} in rounds "
            f"{sorted({r.group for r in rows})}; asked for {asked} on {request.provider}"
        )
    return rows, float(document.get("measure_s", 0.0))


# The worker's side ------------------------------------------------------------------------


def where_measured(pool: str = "") -> dict[str, str]:
    """The host, and for a dispatched benchmark its pool and worker, for each row."""
    return {
        "host": socket.gethostname(),
        "pool": pool,
        "worker": os.environ.get(WORKER_NAME_ENV, "") if pool else "",
    }


def fetch_verified(
    shipped: ShippedFile, into: Path, tracking_uri: str, companions: dict[str, str] | None = None
) -> Path:
    """Download a shipped file (and the `companions` beside it: path relative to it -> sha256)
    into `into`; IntegrityError when any sha256 is not the one sent."""
    import mlflow

    # The file's folder: an ONNX file's external data was shipped beside it.
    folder_uri, _, name = shipped.uri.rpartition("/")
    folder = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=folder_uri, dst_path=str(into), tracking_uri=tracking_uri
        )
    )
    expected = {name: shipped.sha256, **(companions or {})}
    for relative, sha256 in expected.items():
        local = folder / relative
        if not local.is_file():
            raise IntegrityError(f"{folder_uri}/{relative}: not in the run's artifacts")
        actual = sha256_of(local)
        if actual != sha256:
            raise IntegrityError(
                f"{folder_uri}/{relative}: sha256 of the downloaded file is {actual}, the "
                f"dispatching run recorded {sha256}; not measured"
            )
    return folder / name


def measure_request(
    request: DispatchRequest, work_dir: Path, tracking_uri: str
) -> list[BenchResult]:
    """Download and verify every file, then measure the verified contenders in interleaved
    rounds on this host; a file that fails its check is a `refused` row, never measured."""
    where = where_measured(request.pool)
    refused: list[BenchResult] = []

    def refuse(label: str, source: str, size: int | None, status: str, reason: str) -> None:
        who = (label, source, size)
        rows = not_measured(who, request.provider, request.benchmark, status, reason)
        refused.extend(row.model_copy(update=where) for row in rows)

    def fetch(label: str, shipped: ShippedFile, companions: dict[str, str] | None = None) -> Path:
        folder = work_dir / _safe_label(label)
        folder.mkdir(parents=True, exist_ok=True)
        return fetch_verified(shipped, folder, tracking_uri, companions)

    try:
        features = fetch("inputs", request.features)
    except IntegrityError as error:  # nothing can be measured on inputs that are not the run's
        return unmeasured_rows(request, "refused", f"benchmark inputs: {error}", where)
    artifacts = []
    for artifact in request.artifacts:
        shipped = ShippedFile(uri=artifact.path, sha256=artifact.sha256)
        try:
            local = fetch(artifact.variant, shipped, request.external_data.get(artifact.variant))
        except IntegrityError as error:
            refuse(artifact.variant, "run", artifact.size_bytes, "refused", str(error))
            continue
        artifacts.append(artifact.model_copy(update={"path": str(local)}))
    champions = []
    for champion in request.champions:
        try:
            local = fetch(champion.label, ShippedFile(uri=champion.path, sha256=champion.sha256))
        except IntegrityError as error:
            refuse(champion.label, "champion", champion.size_bytes, "refused", str(error))
            continue
        champions.append(champion.model_copy(update={"path": str(local)}))
    baseline = _baseline(request, fetch, refuse)
    runs = profiled_runs(request.benchmark, request.provider, artifacts, request.passed)
    rows = bench_contenders(
        request.benchmark, request.provider, runs, champions, baseline, features
    )
    return [row.model_copy(update=where) for row in rows] + refused


def _baseline(request: DispatchRequest, fetch: Any, refuse: Any) -> tuple[str, dict] | None:
    """The framework baseline's (row name, load request) with its files verified, or None (a
    row says why when the request asked for it)."""
    if request.checkpoint is None or request.recipe is None:
        return None
    label = baseline_name(request.framework)
    try:  # the model files and code the recipe names must exist on this host too
        Recipe.model_validate(request.recipe)
    except ValidationError as error:
        reason = f"the recipe's model cannot be built on this worker: {_first_error(error)}"
        refuse(label, "framework", None, "unsupported", reason)
        return None
    try:
        checkpoint = fetch("checkpoint", request.checkpoint)
        data = None
        if request.data is not None:
            shipped = ShippedFile(uri=request.data.path, sha256=request.data.sha256)
            data = request.data.model_copy(update={"path": str(fetch("data", shipped))})
    except IntegrityError as error:
        refuse(label, "framework", None, "refused", str(error))
        return None
    return label, framework_baseline(request.recipe, str(checkpoint), data)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def write_rows(
    mlflow_client: Any,
    request: DispatchRequest,
    flow_run_id: str,
    rows: list[BenchResult],
    measure_s: float,
) -> None:
    """The worker's rows into the dispatching run, tagged with the flow run that made them;
    `measure_s` is how long fetching, checking and measuring took on the worker."""
    document = {
        "flow_run_id": flow_run_id,
        "measure_s": measure_s,
        "rows": [row.model_dump(mode="json") for row in rows],
    }
    mlflow_client.log_text(request.run_id, json.dumps(document, indent=1), request.result_path)
