"""The recipe schema: one typed, strict description of every stage of a pipeline run.

Unknown keys and wrong types are errors that name the file and the field; paths in a recipe
are resolved against the recipe's own folder and must exist before any work starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from onnxforge.adapters import ADAPTERS
from onnxforge.errors import RecipeError
from onnxforge.providers import PROVIDERS, provider_names
from onnxforge.variants import VARIANTS, Tolerance, ToleranceOverride

SKLEARN_DATASETS = ("digits", "breast_cancer", "wine", "iris")
# discriminator tags that pydantic puts in error locations; the user never wrote them
DATASET_SOURCES = ("sklearn", "npz", "generated", "csv", "parquet", "synthetic")
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


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
    """How labelled data is cut into train / validation / test (stratified, seeded)."""

    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0


class SklearnDataset(SplitSpec):
    """A dataset that ships inside scikit-learn (no download)."""

    source: Literal["sklearn"]
    name: Literal[SKLEARN_DATASETS]  # type: ignore[valid-type]
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)


class NpzDataset(SplitSpec):
    """A local .npz file with named feature and label arrays."""

    source: Literal["npz"]
    path: Path
    features: str | list[str] = "x"  # several names: one array per model input, in input order
    labels: str = "y"
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)

    _path_exists = field_validator("path")(_existing_file)


class GeneratedDataset(SplitSpec):
    """A labelled task generated in code, seeded (see onnxforge/datasets.py for the tasks)."""

    source: Literal["generated"]
    task: Literal["token_majority"]
    samples: int = Field(6000, ge=100)
    seq_len: int = Field(48, ge=8)
    vocab_size: int = Field(64, ge=16)
    classes: int = Field(4, ge=2, le=8)


class TableDataset(SplitSpec):
    """A local .csv or .parquet file: feature columns (in order) and a label column."""

    source: Literal["csv", "parquet"]
    path: Path
    features: list[str] = Field(min_length=1)
    label: str
    sample_shape: list[Annotated[int, Field(ge=1)]] | None = None
    scale: float = Field(1.0, gt=0)

    _path_exists = field_validator("path")(_existing_file)


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
    samples: int = Field(512, ge=10)
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
        return self


DatasetSpec = Annotated[
    SklearnDataset | NpzDataset | GeneratedDataset | TableDataset | SyntheticDataset,
    Field(discriminator="source"),
]


IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class ModelSpec(Strict):
    """Which framework and model: a named architecture, an import path, or a model file."""

    framework: Literal[tuple(ADAPTERS)] = "pytorch"  # type: ignore[valid-type]
    architecture: str | None = None
    file: Path | None = None  # a .keras file (keras) or an .onnx file (onnx)
    kwargs: dict[str, int | float | bool | str] = Field(default_factory=dict)
    checkpoint: Path | None = None

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
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)


AxisName = Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]


class ExportSpec(Strict):
    """ONNX export: opset, exporter (default: the framework's first; others are fallbacks), axes."""

    opset: int = Field(18, ge=13, le=23)
    exporter: str | None = None
    fallback: bool = True
    # input dimension -> name, for every input ({0: batch, 1: sequence}), or per input name
    # ({ids: {0: batch, 1: sequence}, mask: {...}}); each is checked to be symbolic. {} = static.
    dynamic_axes: (
        dict[Annotated[int, Field(ge=0)], AxisName]
        | dict[str, dict[Annotated[int, Field(ge=0)], AxisName]]
    ) = Field(default_factory=lambda: {0: "batch"})

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
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 16])
    warmup: int = Field(10, ge=0)
    # Contenders (variants, the champion, the framework baseline) are measured in interleaved
    # rounds: A, B, C, A, B, C, ... each round `iterations` timed runs (or `time_budget_s`).
    rounds: int = Field(6, ge=2, le=100)
    iterations: int = Field(50, ge=1)
    time_budget_s: float | None = Field(
        None, gt=0
    )  # when set: time this long per round instead of `iterations`
    # rows whose per-round p50s vary more than this (coefficient of variation, std / mean) are
    # flagged noisy: shown, never used to decide a promotion. Per-round, not per-call: single
    # slow calls (a page fault, a context switch) move the mean, not a round's median.
    max_cv: float = Field(0.25, gt=0)
    intra_op_threads: int | None = Field(None, ge=1)
    inter_op_threads: int = Field(1, ge=1)
    baseline: bool = True


class Objective(Strict):
    """What 'best' means: lowest `metric` on `provider` at `batch_size`."""

    metric: Literal["p50_ms", "p90_ms", "p99_ms", "size_bytes"] = "p50_ms"
    provider: str = "CPUExecutionProvider"
    batch_size: int = Field(1, ge=1)


class RegisterSpec(Strict):
    """The registered model, the selection objective and the champion's accuracy budget."""

    enabled: bool = True
    model_name: str = Field(pattern=MODEL_NAME_PATTERN)
    objective: Objective = Field(default_factory=Objective)
    champion_accuracy_budget: float = Field(0.005, ge=0, le=1)
    # champion stays if the candidate is slower than it by more than this (whole interval)
    regression_margin: float = Field(0.10, ge=0)
    # champion moves on speed only when the whole confidence interval of champion p50 /
    # candidate p50 is above 1 + speed_margin
    speed_margin: float = Field(0.05, ge=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)  # floor on test accuracy
    max_rmse: float | None = Field(None, gt=0)  # ceiling on test RMSE (regression outputs)
    # every classifier must beat "always the majority class" (one-sided binomial test)
    floor_p_value: float = Field(0.01, gt=0, lt=1)
    approval: Literal["none", "required"] = "none"  # required: pause for a decision in the UI
    approval_timeout_s: int = Field(3600, ge=1)


class MlflowSpec(Strict):
    """Which MLflow experiment the run goes to."""

    experiment: str = Field("onnxforge", min_length=1)


class Recipe(Strict):
    """A whole pipeline run, stage by stage."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
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

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        adapter = ADAPTERS[self.model.framework]
        if self.train.enabled and not adapter.trainable:
            raise ValueError(
                f"train.enabled: {self.model.framework} models cannot be trained; set it to false"
            )
        if not self.train.enabled and self.model.checkpoint is None and self.model.file is None:
            raise ValueError("model.checkpoint: required when train.enabled is false")
        if self.train.enabled and self.dataset.source == "synthetic":
            raise ValueError(
                "train.enabled: synthetic inputs have no labels to train on; set it to false"
            )
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
        """The recipe flattened to dotted keys, for MLflow params."""
        return _flatten(self.model_dump(mode="json", by_alias=True))


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): str(value)}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turn `key=value` strings (CLI `--set`) into a mapping; a pair without '=' is an error."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise RecipeError(
                f"--set {pair!r}: expected key=value with a dotted key, e.g. train.epochs=5"
            )
        overrides[key] = value
    return overrides


def _apply_override(data: dict[str, Any], dotted: str, raw: str, source: str) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"{source}: --set {dotted}: {part!r} is not a section")
        node = child
    node[leaf] = yaml.safe_load(raw) if raw != "" else ""


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read, override and validate a recipe; any problem raises RecipeError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of sections at the top level")
    for key, raw in (overrides or {}).items():
        _apply_override(data, key, raw, str(path))
    try:
        return Recipe.model_validate(data, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        raise RecipeError(describe_validation_error(path, error)) from None


def describe_validation_error(path: Path, error: ValidationError) -> str:
    """One line: file, dotted field, what was expected (and what was found)."""
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
        return f"{path}: {field}: unknown key{hint}"
    if first["type"] == "missing":
        return f"{path}: {field}: required field is missing"
    if not field:  # a cross-field rule: its message starts with the field it is about
        return f"{path}: {message}"
    if re.match(rf"^{re.escape(loc[0])}[.\[][\w.\-\[\]]*: ", message):
        return f"{path}: {message}"  # a section's cross-field rule names its own field
    if first["type"] in ("value_error", "assertion_error") or "input" not in first:
        return f"{path}: {field}: {message}"
    return f"{path}: {field}: {message} (got {first['input']!r})"


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
