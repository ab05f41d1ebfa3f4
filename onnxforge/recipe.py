"""The recipe schema: one typed, strict description of every stage of a pipeline run.

Unknown keys and wrong types are errors that name the file and the field; paths in a recipe
are resolved against the recipe's own folder and must exist before any work starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from onnxforge.adapters import ADAPTERS, architecture_of, get_adapter
from onnxforge.errors import RecipeError
from onnxforge.overrides import (
    apply_overrides,
    get_dotted,
    refuse_lowered_bar,
    refuse_protected_changes,
    split_key,
)
from onnxforge.overrides import parse_overrides as parse_overrides  # re-exported
from onnxforge.profiles import DEFAULT_PROFILES, RuntimeProfile
from onnxforge.providers import PROVIDERS, provider_names
from onnxforge.recipe_yaml import field_parts, leading_field, line_of, read_yaml_file, shown
from onnxforge.trust import (
    PROMOTION_BAR,
    PROTECTED_MODEL_FIELDS,
    SAME,
    TOLERANCE_BAR,
    check_import_path,
    check_safe_name,
)
from onnxforge.variants import VARIANTS, Tolerance, ToleranceOverride

SKLEARN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
# what the labels are: class ids, continuous targets, or nothing to score against
TASK_TYPES = ("classification", "regression", "none")
# discriminator tags that pydantic puts in error locations; the user never wrote them
DATASET_SOURCES = ("sklearn", "npz", "generated", "csv", "parquet", "synthetic")
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"

# Recipes are validated strictly (no bool for a number, no "5" for 5, no 2.5 for an int), so a
# path arrives as a YAML string and becomes a Path here.
RecipePath = Annotated[Path, BeforeValidator(lambda v: Path(v) if isinstance(v, str) else v)]
# Names that become folders (MLflow's embedded store keeps artifacts in mlartifacts/<experiment>).
SafeName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(check_safe_name)]


class Strict(BaseModel):
    """Base for every recipe section: unknown keys refused, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """A recipe path, resolved against the recipe's own folder."""
    base = Path((info.context or {}).get("base_dir", "."))
    return value if value.is_absolute() else (base / value).resolve()


def _existing_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a recipe path and require that the file exists."""
    if value is not None and not _resolve(value, info).is_file():
        raise ValueError(f"file not found: {_resolve(value, info)}")
    return None if value is None else _resolve(value, info)


def _existing_model(value: Path | None, info: ValidationInfo) -> Path | None:
    """Like _existing_file, but a folder (a TensorFlow SavedModel) is allowed too."""
    if value is not None and not _resolve(value, info).exists():
        raise ValueError(f"file not found: {_resolve(value, info)}")
    return None if value is None else _resolve(value, info)


class SplitSpec(Strict):
    """How data is cut into train / validation / test (seeded; stratified for classification)
    and what its labels are."""

    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0
    # None: inferred from the labels (see onnxforge/datasets.py, inferred_task); `none` drops them
    task_type: Literal[TASK_TYPES] | None = None  # type: ignore[valid-type]
    # What class id i means, written into the pull manifest; None: a scikit-learn dataset's
    # target_names, otherwise the ids themselves.
    class_labels: list[Annotated[str, Field(max_length=256)]] | None = Field(
        None, min_length=1, max_length=100_000
    )

    def declared_label_free(self) -> bool:
        """The recipe itself says there are no labels (before any file is read)."""
        return self.task_type == "none"


class SklearnDataset(SplitSpec):
    """A dataset that ships inside scikit-learn (no download)."""

    source: Literal["sklearn"]
    name: Literal[SKLEARN_DATASETS]  # type: ignore[valid-type]
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)


class NpzDataset(SplitSpec):
    """A local .npz file with named feature and label arrays."""

    source: Literal["npz"]
    path: RecipePath
    features: str | list[str] = "x"  # several names: one array per model input, in input order
    # omitted: the array `y` when the file has one, else no labels; null: no labels
    labels: str | None = "y"
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)

    _path_exists = field_validator("path")(_existing_file)

    def declared_label_free(self) -> bool:
        """`labels: null`, or task_type none."""
        return self.labels is None or self.task_type == "none"


class GeneratedDataset(SplitSpec):
    """A labelled task generated in code, seeded (see onnxforge/datasets.py for the tasks)."""

    source: Literal["generated"]
    task: Literal["token_majority"]
    samples: int = Field(6000, ge=100, le=1_000_000)
    seq_len: int = Field(48, ge=8, le=4096)
    vocab_size: int = Field(64, ge=16, le=1_000_000)
    classes: int = Field(4, ge=2, le=8)


class TableDataset(SplitSpec):
    """A local .csv or .parquet file: feature columns (in order) and a label column."""

    source: Literal["csv", "parquet"]
    path: RecipePath
    features: list[str] = Field(min_length=1)
    label: str | None = None  # omitted or null: no labels
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)

    _path_exists = field_validator("path")(_existing_file)

    def declared_label_free(self) -> bool:
        """No label column, or task_type none."""
        return self.label is None or self.task_type == "none"


class SyntheticInput(Strict):
    """One model input: its name, shape (names for symbolic dims), dtype and value range."""

    name: str = Field(min_length=1)
    shape: list[int | str] = Field(min_length=1)
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"] = "float32"
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _batch_first(self) -> SyntheticInput:
        if not isinstance(self.shape[0], str):
            raise ValueError(
                "shape: the first dimension must be symbolic (the batch), e.g. [batch, 3]"
            )
        if self.high <= self.low:
            raise ValueError(f"high: must be above low ({self.low}); got {self.high}")
        return self


class SyntheticDataset(SplitSpec):
    """Random inputs from a declared spec, for models with no labelled data (no accuracy metrics)."""

    source: Literal["synthetic"]
    inputs: list[SyntheticInput] = Field(min_length=1)
    samples: int = Field(512, ge=10, le=1_000_000)
    # a value for each symbolic dimension other than the batch, e.g. {sequence: 32}
    dims: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dims_known(self) -> SyntheticDataset:
        for index, spec in enumerate(self.inputs):
            for dim in spec.shape[1:]:
                if isinstance(dim, str) and dim not in self.dims:
                    raise ValueError(
                        f"dataset.inputs[{index}].shape: symbolic dimension {dim!r} needs a value "
                        "in dataset.dims"
                    )
        if self.task_type not in (None, "none"):
            raise ValueError(
                f"dataset.task_type: synthetic inputs have no labels, so the task is none; "
                f"got {self.task_type!r}"
            )
        return self

    def declared_label_free(self) -> bool:
        """Synthetic inputs never have labels."""
        return True


DatasetSpec = Annotated[
    SklearnDataset | NpzDataset | GeneratedDataset | TableDataset | SyntheticDataset,
    Field(discriminator="source"),
]


IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class ModelSpec(Strict):
    """Which framework and model: a named architecture, an import path, or a model file."""

    framework: Literal[tuple(ADAPTERS)] = "pytorch"  # type: ignore[valid-type]
    architecture: str | None = None
    file: RecipePath | None = None  # a .keras file (keras) or an .onnx file (onnx)
    kwargs: dict[str, int | float | bool | str] = Field(default_factory=dict)
    checkpoint: RecipePath | None = None

    _checkpoint_exists = field_validator("checkpoint")(_existing_file)
    _file_exists = field_validator("file")(_existing_model)

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str | None, info: ValidationInfo) -> str | None:
        framework = info.data.get("framework")
        if value is None or framework is None:  # a refused framework is reported on its own
            return value
        adapter = ADAPTERS[framework]
        if adapter.import_paths and re.fullmatch(IMPORT_PATH, value):
            check_import_path(value)  # before anything imports it
            return value
        if value not in adapter.architectures:
            choices = list(adapter.architectures)
            if adapter.import_paths:
                choices.append("package.module:ClassOrFactory")
            raise ValueError(
                f"expected one of {', '.join(choices) or '(none: use model.file)'} "
                f"for {framework}; got {value!r}"
            )
        return value

    @field_validator("kwargs")
    @classmethod
    def _recipe_relative_paths(cls, value: dict[str, Any], info: ValidationInfo) -> Any:
        """Kwargs the architecture reads as paths (a `transformers` folder, `pretrained`) are
        recipe paths, like file and checkpoint."""
        framework = info.data.get("framework")
        if framework is None:  # a refused framework is reported on its own
            return value
        architecture = ADAPTERS[framework].architecture(info.data.get("architecture"))
        return architecture.recipe_paths(value, lambda path: _resolve(path, info))

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        adapter = ADAPTERS[self.framework]
        if self.file is not None:
            saved_model = self.file.is_dir() and (self.file / "saved_model.pb").is_file()
            if saved_model and not adapter.saved_models:
                raise ValueError(f"model.file: {self.framework} cannot load a SavedModel folder")
            if not saved_model and self.file.suffix not in adapter.file_suffixes:
                expected = " or ".join(adapter.file_suffixes) or f"(none for {self.framework})"
                raise ValueError(f"model.file: expected a {expected} file; got {self.file.name!r}")
            if self.architecture is not None:
                raise ValueError("model.architecture: give either architecture or file, not both")
        elif self.architecture is None:
            field = "model.architecture" if adapter.architectures else "model.file"
            raise ValueError(f"{field}: required for {self.framework} models")
        return self


class TrainSpec(Strict):
    """Training loop settings; `enabled: false` uses the checkpoint as it is."""

    enabled: bool = True
    epochs: int = Field(15, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    seed: int = 0
    threads: int | None = Field(None, ge=1, le=1024)


AxisName = Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]


class ExportSpec(Strict):
    """ONNX export: opset, exporter (default: the framework's first; others are fallbacks), axes."""

    opset: int = Field(18, ge=13, le=23)
    exporter: str | None = None
    fallback: bool = True
    # input dimension -> name, for every input ({0: batch, 1: sequence}), or per input name
    # ({ids: {0: batch, 1: sequence}, mask: {...}}); each is checked to be symbolic. The
    # preflight checks names and dimensions against the model's inputs and, for an exported
    # model, requires dimension 0 (the batch) of every input.
    dynamic_axes: (
        dict[Annotated[int, Field(ge=0)], AxisName]
        | dict[str, dict[Annotated[int, Field(ge=0)], AxisName]]
    ) = Field(default_factory=lambda: {0: "batch"})
    # ONNX files only: rewrite a fixed dimension 0 to a symbolic `batch` when the graph provably
    # allows it; the rewrite must give the original's outputs on real samples before it is used.
    make_batch_dynamic: bool = False

    def axes_for(self, input_name: str) -> dict[int, str]:
        """The declared dynamic axes of one input."""
        if all(isinstance(key, int) for key in self.dynamic_axes):
            return dict(self.dynamic_axes)  # type: ignore[arg-type]
        return dict(self.dynamic_axes.get(input_name, {}))  # type: ignore[arg-type]


def _variants_section() -> type[BaseModel]:
    """The `variants` section, one optional field per registered variant that a maker builds."""
    fields: dict[str, Any] = {
        spec.name.replace("-", "_"): (spec.settings | None, Field(None, alias=spec.name))
        for spec in VARIANTS.values()
        if spec.make is not None
    }
    config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    section = create_model("VariantsSpec", __config__=config, **fields)
    section.__doc__ = "Which variants to build after the fp32 export, each with its settings."
    return section


VariantsSpec = _variants_section()


def _default_variants() -> BaseModel:
    return VariantsSpec(simplified={}, int8_dynamic={})


class ParitySpec(Strict):
    """Parity contract: per-variant tolerance overrides and the accuracy-drop budget."""

    # only the fields a recipe gives replace the variant's registered default
    tolerances: dict[str, ToleranceOverride] = Field(default_factory=dict)  # type: ignore[valid-type]
    accuracy_drop_budget: float = Field(0.01, ge=0, le=1)

    @field_validator("tolerances")
    @classmethod
    def _known_variants(cls, value: dict[str, BaseModel]) -> dict[str, BaseModel]:
        unknown = sorted(set(value) - set(VARIANTS))
        if unknown:
            raise ValueError(
                f"unknown variant {unknown[0]!r}; expected one of {', '.join(VARIANTS)}"
            )
        return value


def _known_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"expected one of {', '.join(provider_names())}; got {name!r}")
    return name


class BenchmarkSpec(Strict):
    """Latency benchmark: providers, batch sizes, warm-up and timed iterations, threads."""

    providers: list[Annotated[str, AfterValidator(_known_provider)]] = Field(
        default_factory=lambda: ["CPUExecutionProvider"], min_length=1
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [1, 16], min_length=1
    )
    warmup: int = Field(10, ge=0, le=10_000)
    # Contenders (variants, the champion, the framework baseline) are measured in interleaved
    # rounds: A, B, C, A, B, C, ... each round `iterations` timed runs (or `time_budget_s`).
    rounds: int = Field(6, ge=2, le=100)
    iterations: int = Field(50, ge=1, le=100_000)
    time_budget_s: float | None = Field(
        None, gt=0, le=3600
    )  # when set: time this long per round instead of `iterations`
    # rows whose per-round p50s vary more than this (coefficient of variation, std / mean) are
    # flagged noisy: shown, never used to decide a promotion. Per-round, not per-call: single
    # slow calls (a page fault, a context switch) move the mean, not a round's median.
    max_cv: float = Field(0.25, gt=0, le=10)
    intra_op_threads: int | None = Field(None, ge=1, le=1024)
    inter_op_threads: int = Field(1, ge=1, le=1024)
    baseline: bool = True
    # Providers measured on a Prefect work pool instead of on this machine: provider -> pool
    # name, e.g. {CUDAExecutionProvider: gpu-pool}. The flow runs the deployment
    # onnx-benchmark/<pool> there (run_deployment) and merges the rows its worker writes into
    # this run. A provider left out is measured here.
    pools: dict[
        Annotated[str, AfterValidator(_known_provider)],
        Annotated[str, Field(pattern=MODEL_NAME_PATTERN)],
    ] = Field(default_factory=dict)
    # A dispatched benchmark that no worker has started after this long ends as `no-worker`;
    # one that has not finished after `dispatch_timeout_s` in all ends as `timeout`.
    dispatch_start_timeout_s: int = Field(120, ge=1, le=86_400)
    dispatch_timeout_s: int = Field(3600, ge=10, le=86_400)
    # Runtime profiles every passing variant is timed under (onnxforge/profiles.py): the pinned
    # runtime as it comes, plus known remedies; an alias moves to a (variant, profile) pair.
    profiles: list[RuntimeProfile] = Field(
        default_factory=lambda: list(DEFAULT_PROFILES), min_length=1, max_length=16
    )

    @model_validator(mode="after")
    def _unique_profiles(self) -> BenchmarkSpec:
        names = [profile.name for profile in self.profiles]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"profiles: names must be unique; {', '.join(twice)} repeated")
        for index, profile in enumerate(self.profiles):
            for provider in profile.providers:
                if provider not in PROVIDERS:
                    raise ValueError(
                        f"profiles[{index}].providers: unknown provider {provider!r}; "
                        f"expected one of {', '.join(provider_names())}"
                    )
        return self

    @model_validator(mode="after")
    def _pools_for_benchmarked_providers(self) -> BenchmarkSpec:
        for provider in self.pools:
            if provider not in self.providers:
                raise ValueError(
                    f"pools.{provider}: not among benchmark.providers "
                    f"({', '.join(self.providers)}); add it there, or drop its pool"
                )
        return self


class EdgeSpec(Strict):
    """An edge target: every passing variant is also converted to ONNX Runtime's ORT format
    (onnxruntime.tools.convert_onnx_models_to_ort), with the operator list of a reduced build, a
    mobile usability verdict, single-thread latency and peak memory; `champion-edge` goes to
    the fastest single-thread file whose peak memory fits `memory_budget_mb`."""

    memory_budget_mb: float = Field(256.0, gt=0, le=1_000_000)
    # Fixed: optimizations applied at conversion (for target_platform); Runtime: saved so that
    # a minimal build can apply them at load time.
    optimization_style: Literal["Fixed", "Runtime"] = "Fixed"
    target_platform: Literal["amd64", "arm"] = "amd64"


class Objective(Strict):
    """What 'best' means: lowest `metric` on `provider` at `batch_size`."""

    metric: Literal["p50_ms", "p90_ms", "p99_ms", "size_bytes"] = "p50_ms"
    provider: str = "CPUExecutionProvider"
    batch_size: int = Field(1, ge=1, le=65_536)


class RegisterSpec(Strict):
    """The registered model, the selection objective and the champion's accuracy budget."""

    enabled: bool = True
    model_name: Annotated[str, AfterValidator(check_safe_name)] = Field(pattern=MODEL_NAME_PATTERN)
    objective: Objective = Field(default_factory=Objective)
    champion_accuracy_budget: float = Field(0.005, ge=0, le=1)
    # champion stays if the candidate is slower than it by more than this (whole interval)
    regression_margin: float = Field(0.10, ge=0, le=10)
    # champion moves on speed only when the whole confidence interval of champion p50 /
    # candidate p50 is above 1 + speed_margin
    speed_margin: float = Field(0.05, ge=0, le=10)
    min_accuracy: float | None = Field(None, ge=0, le=1)  # floor on test accuracy
    max_rmse: float | None = Field(None, gt=0)  # ceiling on test RMSE (regression outputs)
    # every classifier must beat "always the majority class" (one-sided binomial test)
    floor_p_value: float = Field(0.01, gt=0, lt=1)
    approval: Literal["none", "required"] = "none"  # required: pause for a decision in the UI
    approval_timeout_s: int = Field(3600, ge=1, le=604_800)  # at most a week


class MlflowSpec(Strict):
    """Which MLflow experiment the run goes to."""

    experiment: SafeName = "onnxforge"


class Recipe(Strict):
    """A whole pipeline run, stage by stage."""

    name: Annotated[str, AfterValidator(check_safe_name)] = Field(pattern=MODEL_NAME_PATTERN)
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    variants: VariantsSpec = Field(default_factory=_default_variants)  # type: ignore[valid-type]
    parity: ParitySpec = Field(default_factory=ParitySpec)
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    # 'register' would shadow BaseModel's ABC `register`; recipes still spell the section 'register'.
    registry: RegisterSpec = Field(alias="register")
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec)
    edge: EdgeSpec | None = None  # declared: an edge bundle per passing variant, champion-edge

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        adapter = ADAPTERS[self.model.framework]
        if self.train.enabled and not adapter.trainable:
            raise ValueError(
                f"train.enabled: {self.model.framework} models cannot be trained; set it to false"
            )
        weights_given = (
            self.model.checkpoint is not None
            or self.model.file is not None
            # e.g. a transformers folder holds its weights
            or bool(architecture_of(self.model).weight_inputs(self.model.kwargs))
        )
        if not self.train.enabled and not weights_given:
            raise ValueError("model.checkpoint: required when train.enabled is false")
        if self.train.enabled and self.dataset.declared_label_free():
            what = (
                "synthetic inputs have" if self.dataset.source == "synthetic" else "the dataset has"
            )
            raise ValueError(f"train.enabled: {what} no labels to train on; set it to false")
        if self.export.opset > adapter.max_opset:
            raise ValueError(
                f"export.opset: {self.model.framework} models are exported with "
                f"{adapter.exporters[0]}, which writes opset <= {adapter.max_opset}; got {self.export.opset}"
            )
        if self.export.exporter is not None and self.export.exporter not in adapter.exporters:
            raise ValueError(
                f"export.exporter: expected one of {', '.join(adapter.exporters)} for "
                f"{self.model.framework}; got {self.export.exporter!r}"
            )
        if self.export.make_batch_dynamic and not adapter.rewrites_fixed_batch:
            raise ValueError(
                "export.make_batch_dynamic: rewrites a brought ONNX file (framework: onnx); "
                f"{self.model.framework} exports name their axes in export.dynamic_axes"
            )
        requested = dict(self.requested_variants())
        for name, settings in requested.items():
            # Only a source the recipe names: the default (simplified) falls back to the
            # nearest built ancestor, as int8 of a recipe without simplified always has (fp32).
            if "source" not in getattr(settings, "model_fields_set", ()):
                continue
            if settings.source not in requested:
                raise ValueError(
                    f"variants.{name}.source: {settings.source!r} is not among the recipe's "
                    f"variants ({', '.join(requested)}); add it, or leave source out"
                )
        objective = self.registry.objective
        if objective.provider not in self.benchmark.providers:
            raise ValueError(
                f"register.objective.provider: {objective.provider!r} is not in benchmark.providers"
            )
        if (
            objective.metric != "size_bytes"
            and objective.batch_size not in self.benchmark.batch_sizes
        ):
            raise ValueError(
                f"register.objective.batch_size: {objective.batch_size} is not in "
                f"benchmark.batch_sizes {self.benchmark.batch_sizes}"
            )
        return self

    def to_data(self) -> dict[str, Any]:
        """The recipe as JSON data that another process validates back to this recipe: only
        the values the recipe gave (paths resolved), so a default stays a default there, e.g.
        int8's `source`, which is checked against the variants only when the recipe names it."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def requested_variants(self) -> list[tuple[str, BaseModel]]:
        """(name, settings) of each variant to build after fp32, in registry (build) order."""
        chosen = self.variants.model_dump(by_alias=True, exclude_none=True)
        return [
            (name, getattr(self.variants, name.replace("-", "_")))
            for name in VARIANTS
            if name in chosen
        ]

    def tolerance(self, variant: str) -> Tolerance:
        """The variant's registered default, with the fields the recipe overrides replaced."""
        default = VARIANTS[variant].default_tolerance
        override = self.parity.tolerances.get(variant)
        return default if override is None else default.merged(override)

    def flat_params(self) -> dict[str, str]:
        """The recipe flattened to dotted keys, for MLflow params. A brought ONNX file is not
        exported: its export.opset is the opset the file declares, not the recipe's default."""
        params = _flatten(self.model_dump(mode="json", by_alias=True))
        declared = get_adapter(self.model.framework).declared_opset(self.model)
        if declared is not None:
            params["export.opset"] = str(declared)
        return params


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): str(value)}


def _path_fields(model: type[BaseModel], prefix: str) -> list[str]:
    """Dotted names of every Path-typed field under `model` (any dataset source included)."""
    found = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{field.alias or name}"
        kinds = [field.annotation, *get_args(field.annotation)]
        for kind in [k for outer in kinds for k in (outer, *get_args(outer))]:
            if kind is Path and dotted not in found:
                found.append(dotted)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found += [f for f in _path_fields(kind, f"{dotted}.") if f not in found]
    return found


# What overrides may not change: code (architecture, kwargs, framework) and every file path.
PROTECTED_FIELDS = list(dict.fromkeys([*PROTECTED_MODEL_FIELDS, *_path_fields(Recipe, "")]))


def _schema_default(field: str) -> Any:
    """The schema's default of a dotted field ('register.floor_p_value' -> 0.01)."""
    model: Any = Recipe
    *sections, leaf = field.split(".")
    for part in sections:
        model = next(f for n, f in model.model_fields.items() if part in (n, f.alias)).annotation
        # an optional section (`edge: EdgeSpec | None`): the section's own schema
        model = next((a for a in getattr(model, "__args__", ()) if a is not type(None)), model)
    return model.model_fields[leaf].get_default(call_default_factory=True)


def _usable_bar_value(direction: str, value: Any, default: Any) -> Any:
    """`value` when it is one the field can hold, else the default (a document not validated on
    its own, or a field it leaves out)."""
    if direction == SAME:
        usable = isinstance(value, (str, int, float))
    else:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        usable = number or (value is None and default is None)
    return value if usable else default


def promotion_bar(document: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The promotion bar a recipe document sets: field -> (direction, value), for every field of
    onnxforge.trust.PROMOTION_BAR and every variant's effective tolerance (its registered default
    merged with the fields the document gives), schema defaults filled in."""
    bar = {}
    for field, direction in PROMOTION_BAR.items():
        value = get_dotted(document, field.split("."))
        bar[field] = (direction, _usable_bar_value(direction, value, _schema_default(field)))
    for variant, spec in VARIANTS.items():
        given = get_dotted(document, ["parity", "tolerances", variant])
        given = given if isinstance(given, dict) else {}
        default = spec.default_tolerance.model_dump()
        for name, direction in TOLERANCE_BAR.items():
            value = _usable_bar_value(direction, given.get(name, default[name]), default[name])
            bar[f"parity.tolerances.{variant}.{name}"] = (direction, value)
    return bar


def _read_document(path: Path) -> tuple[dict[str, Any], Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    data, node = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of sections at the top level")
    return data, node


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, override and validate a recipe; any problem raises RecipeError naming file and field.

    Overrides are untrusted: one that changes a protected field (PROTECTED_FIELDS) is refused
    unless ONNXFORGE_TRUSTED_OVERRIDES=1, one that loosens the promotion bar (promotion_bar)
    unless ONNXFORGE_TRUSTED_BAR=1. Values are validated strictly: no bool for a number, no
    string for a number, no fraction for an integer.
    """
    path = Path(path)
    data, node = _read_document(path)
    overrides = dict(overrides or {})
    overridden = apply_overrides(data, overrides, str(path))
    refuse_protected_changes(data, overridden, overrides, PROTECTED_FIELDS, str(path))
    try:
        recipe = _validate(overridden, path)
    except ValidationError as error:
        message = describe_validation_error(path, error, node, overrides)
        raise RecipeError(_blame_overrides(message, path, data, overrides)) from None
    refuse_lowered_bar(promotion_bar(data), promotion_bar(overridden), overrides, str(path))
    return recipe


def _validate(document: dict[str, Any], path: Path) -> Recipe:
    return Recipe.model_validate(document, strict=True, context={"base_dir": path.parent.resolve()})


def _blame_overrides(
    message: str, path: Path, data: dict[str, Any], overrides: dict[str, Any]
) -> str:
    """An error placed on a line of the recipe that the recipe alone does not have came from the
    overrides (`--set benchmark.providers=[...]` dropping the objective's provider): name the
    override that causes it on its own, or all of them, instead of the line."""
    match = re.match(rf"{re.escape(str(path))}:\d+: (.*)", message, re.S)
    if not overrides or match is None:
        return message
    text = match.group(1)

    def gives_it(overrides_: dict[str, Any]) -> bool:
        try:
            _validate(apply_overrides(data, overrides_, str(path)), path)
        except ValidationError as error:
            return describe_validation_error(path, error) == f"{path}: {text}"
        except RecipeError:
            return False
        return False

    if gives_it({}):
        return message
    keys = list(overrides)
    alone = next((key for key in keys[:20] if gives_it({key: overrides[key]})), None)
    named = alone or ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"{path}: override{'' if alone or len(keys) == 1 else 's'} {named}: {text}"


def locate(path: Path | str, node: Any, field: str, overrides: dict[str, Any] | None = None) -> str:
    """'file:line' of `field` in the recipe, or 'file' when the value came from an override or
    the document does not have it."""
    parts = [str(part) for part in field_parts(field)]
    for key in overrides or {}:
        if split_key(key) == parts[: len(split_key(key))]:
            return str(path)
    line = line_of(node, field_parts(field))
    return f"{path}:{line}" if line is not None else str(path)


def field_location(path: Path | str, field: str, overrides: dict[str, Any] | None = None) -> str:
    """locate() for a recipe file read again (for errors found after loading, in the preflight)."""
    try:
        _, node = read_yaml_file(Path(path))
    except (OSError, RecipeError):
        return str(path)
    return locate(path, node, field, overrides)


def describe_validation_error(
    path: Path, error: ValidationError, node: Any = None, overrides: dict[str, Any] | None = None
) -> str:
    """One line: file:line, dotted field, what was expected (and what was found)."""
    first = error.errors()[0]
    loc = [
        f"[{part}]" if isinstance(part, int) else str(part)
        for part in first["loc"]
        if part not in DATASET_SOURCES
    ]
    field = ".".join(loc).replace(".[", "[")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of {', '.join(allowed)}" if allowed else ""
        text = f"{field}: unknown key{hint}"
    elif first["type"] == "missing":
        text = f"{field}: required field is missing"
    elif not field or re.match(rf"^{re.escape(loc[0])}[.\[][\w.\-\[\]]*: ", message):
        text = message  # a cross-field rule: its message starts with the field it is about
    elif first["type"] in ("value_error", "assertion_error") or "input" not in first:
        text = f"{field}: {message}"
    else:
        text = f"{field}: {message} (got {_shown(first['input'])})"
    about = leading_field(text)
    return f"{locate(path, node, about, overrides) if about else path}: {text}"


def _shown(value: Any) -> str:
    """The offending value as the user wrote it (YAML-ish: true, not True)."""
    if isinstance(value, (bool, type(None))):
        return json.dumps(value)
    return shown(value)


def _allowed_keys(parent_loc: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    keyed = False  # the previous field was a mapping: this part is one of its keys
    for part in parent_loc:
        if keyed:
            keyed = False
            continue
        if part == "dataset":  # a union of sources: list what any source accepts
            sources = (SklearnDataset, NpzDataset, GeneratedDataset, TableDataset, SyntheticDataset)
            return sorted(set().union(*(source.model_fields for source in sources)))
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        candidates = get_args(field.annotation) or (field.annotation,) if field else ()
        keyed = field is not None and get_origin(field.annotation) is dict
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return [field.alias or name for name, field in model.model_fields.items()]
