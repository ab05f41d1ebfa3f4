"""The run as plain Python: the stage order, the variant chain, and one function per step.

flows/onnx_pipeline.py wraps each step in a Prefect task (retries, caching, logging, the UI) and
stays the readable picture of a run; the benchmark scripts (benchmarks/) call the same steps
without Prefect. Every step that reads samples takes the run's DataRecord: there is one data path,
and every read of it checks the file's sha256 first (onnxforge.data_record.read_splits).

    data -> fetch champions -> train -> export -> variants (in chain order) -> parity
      -> evaluate champions -> benchmark per provider -> report -> log models -> propose
      -> [approval] -> register (locked) -> promote (aliases last)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from onnxforge.data_record import DataRecord, materialize, read_splits
from onnxforge.recipe import Recipe
from onnxforge.records import (
    BenchContenders,
    BenchResult,
    ChampionRecord,
    EdgeCandidate,
    ModelArtifact,
    ParityResult,
    TrainResult,
    VariantBuild,
)
from onnxforge.variants import buildable_from

STAGES = (
    "materialize-data",
    "fetch-champions",
    "train",
    "export",
    "make-variant",  # once per requested variant, parents first
    "parity-validate",
    "evaluate-champions",
    "benchmark-provider",  # once per provider; the champions run in the same rounds
    "benchmark-report",
    "edge-bundles",  # recipes with an `edge` section: .ort files, parity, one-thread rows
    "log-models",
    "propose-promotion",
    "register",  # inside the registry lock, with the summary and the alias moves
    "promote",
)

# (variant name, parent artifact) -> the build; the flow passes its cached Prefect task here.
VariantMaker = Callable[[str, ModelArtifact], VariantBuild]


def parent_for(
    variant: str, builds: Sequence[VariantBuild], settings: BaseModel | None = None
) -> ModelArtifact:
    """The artifact a variant is made from: its parent (registered, or the settings' `source`),
    or the nearest built ancestor."""
    built = {b.variant: b.artifact for b in builds if b.artifact is not None}
    return built[buildable_from(variant, set(built), settings)]


def build_chain(recipe: Recipe, fp32: ModelArtifact, make: VariantMaker) -> list[VariantBuild]:
    """fp32 first, then every requested variant in order (simplify, optimize, quantize), each
    made from its parent or, when that one failed, its nearest built ancestor."""
    builds = [VariantBuild(variant="fp32", artifact=fp32)]
    for name, settings in recipe.requested_variants():
        builds.append(make(name, parent_for(name, builds, settings)))
    return builds


def built_artifacts(builds: Sequence[VariantBuild]) -> list[ModelArtifact]:
    """The artifacts of the variants that were made."""
    return [build.artifact for build in builds if build.artifact is not None]


def passing_artifacts(
    artifacts: Sequence[ModelArtifact], parity: Sequence[ParityResult]
) -> list[ModelArtifact]:
    """The artifacts whose parity passed: the only ones worth benchmarking or registering."""
    passed = {result.variant for result in parity if result.passed}
    return [artifact for artifact in artifacts if artifact.variant in passed]


def contenders_of(
    trained: TrainResult,
    artifacts: Sequence[ModelArtifact],
    parity: Sequence[ParityResult],
    champions: Sequence[ChampionRecord] = (),
) -> BenchContenders:
    """What every provider's rounds time: each (variant, runtime profile) pair that passed
    parity, the verified champions, and the training behind the framework baseline."""
    return BenchContenders(
        trained=trained,
        artifacts=tuple(passing_artifacts(artifacts, parity)),
        champions=tuple(champions),
        passed=tuple((result.variant, result.profile) for result in parity if result.passed),
    )


# The steps, without Prefect ----------------------------------------------------------------


def prepare_data(recipe: Recipe, work_dir: Path) -> DataRecord:
    """The recipe's splits, written once to `work_dir/data.npz` and described by its sha256."""
    from onnxforge.datasets import load_splits

    return materialize(load_splits(recipe.dataset), work_dir)


def train(
    recipe: Recipe,
    data: DataRecord,
    work_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fit the recipe's model on the run's data (or take its checkpoint as is)."""
    from onnxforge.training import train_model

    return train_model(recipe, work_dir, on_epoch or (lambda *_: None), data)


def export(recipe: Recipe, trained: TrainResult, data: DataRecord, work_dir: Path) -> ModelArtifact:
    """The trained checkpoint as a checked fp32 ONNX file."""
    from onnxforge.export import export_model

    return export_model(recipe, trained.checkpoint, work_dir, data)


def make_variant(
    recipe: Recipe, name: str, parent: ModelArtifact, data: DataRecord, work_dir: Path
) -> VariantBuild:
    """One requested variant from `parent`, calibrated on the run's training split."""
    from onnxforge.variant_build import build_variant

    settings = dict(recipe.requested_variants())[name]
    return build_variant(name, parent, settings, work_dir, read_splits(data).x_train)


def check_parity(
    recipe: Recipe, trained: TrainResult, artifacts: Sequence[ModelArtifact], data: DataRecord
) -> list[ParityResult]:
    """Every variant against the source model on the run's test split."""
    from onnxforge.parity import check_all

    return check_all(recipe, trained.checkpoint, list(artifacts), data)


def benchmark(
    recipe: Recipe, contenders: BenchContenders, provider: str, data: DataRecord, work_dir: Path
) -> list[BenchResult]:
    """`provider`'s interleaved rounds on this host: the passing variants, the champions and,
    in the baseline provider's rounds, the source framework."""
    from onnxforge.benchmark import bench_provider, benchmark_inputs

    features = benchmark_inputs(data, work_dir)
    return bench_provider(recipe, provider, contenders, features, data)


def edge(
    recipe: Recipe, contenders: BenchContenders, data: DataRecord, work_dir: Path
) -> list[EdgeCandidate]:
    """The edge bundle of every passing variant and of the champion-edge holder's file, with
    parity and single-thread rows (nothing unless the recipe declares `edge`)."""
    from onnxforge.edge import edge_candidates

    return edge_candidates(recipe, contenders, data, work_dir)


def benchmark_shipped(request: Any, work_dir: Path, tracking_uri: str) -> list[BenchResult]:
    """A provider's rounds on a work-pool worker: the files a pipeline run shipped (a
    onnxforge.dispatch.DispatchRequest), each downloaded and sha256-checked, then the same
    interleaved rounds as `benchmark`; a file that fails its check is a `refused` row."""
    from onnxforge.dispatch import measure_request

    return measure_request(request, work_dir, tracking_uri)


class LocalRun(BaseModel):
    """What `run_local` measured: the same records the flow passes between its tasks."""

    data: DataRecord
    trained: TrainResult
    builds: list[VariantBuild]
    parity: list[ParityResult]
    bench: list[BenchResult]

    @property
    def artifacts(self) -> list[ModelArtifact]:
        """The variants that were built."""
        return built_artifacts(self.builds)


def run_local(
    recipe: Recipe,
    work_dir: Path,
    champions: Sequence[ChampionRecord] = (),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> LocalRun:
    """Data, train, export, the variant chain, parity and every provider's rounds, without
    Prefect or MLflow: what a benchmark script measures is what the flow measures."""
    from onnxforge.rounds import with_speedups

    data = prepare_data(recipe, work_dir)
    trained = train(recipe, data, work_dir, on_epoch)
    fp32 = export(recipe, trained, data, work_dir)
    builds = build_chain(
        recipe, fp32, lambda name, parent: make_variant(recipe, name, parent, data, work_dir)
    )
    artifacts = built_artifacts(builds)
    parity = check_parity(recipe, trained, artifacts, data)
    contenders = contenders_of(trained, artifacts, parity, champions)
    bench: list[BenchResult] = []
    for provider in recipe.benchmark.providers:
        bench += benchmark(recipe, contenders, provider, data, work_dir)
    return LocalRun(
        data=data, trained=trained, builds=builds, parity=parity, bench=with_speedups(bench)
    )
