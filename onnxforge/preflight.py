"""Checks that need the data, the model or the machine, run before any training: bad input
fails fast.

`onnxforge run` checks in the CLI and again in the flow's validate-recipe task; the second check
in the same process skips the data and model part for inputs that already passed (a deployment
run, in its own process, gets the whole check in the task).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from onnxforge.adapters import architecture_of, get_adapter
from onnxforge.datasets import check_seed, load_splits
from onnxforge.errors import RecipeError
from onnxforge.inputs import describe, take
from onnxforge.recipe import Recipe, field_location, load_recipe
from onnxforge.recipe_yaml import leading_field
from onnxforge.scoring import is_class_scores
from onnxforge.tracking import STATE_ENV, resolve_tracking_uri, state_dir
from onnxforge.trust import allowed_modules

_PASSED: set[str] = set()  # data-and-model checks that passed in this process (see _passed_key)


def check_home() -> None:
    """ONNXFORGE_HOME (or the folder it would be made in) must be a writable folder."""
    home = state_dir()
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    hint = f"point {STATE_ENV} at a writable folder"
    if not existing.is_dir():
        raise RecipeError(f"{STATE_ENV}: {home}: {existing} is not a folder; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(
            f"{STATE_ENV}: {home} is not writable by this user ({existing} is read-only); {hint}"
        )


def check_objective_provider(recipe: Recipe, source: str, overrides: Any = None) -> None:
    """The provider that picks the registered variant must run here (other benchmark providers
    that are missing become `skipped` rows)."""
    from onnxforge.providers import PROVIDERS

    provider = recipe.registry.objective.provider
    if provider in recipe.benchmark.pools:  # measured where its pool's workers run, not here
        return
    reason = PROVIDERS[provider].unavailable_reason()
    if reason is not None:
        _refuse(
            source,
            f"register.objective.provider: {reason}; pick an available provider for the "
            "objective (unavailable benchmark.providers are reported as skipped)",
            overrides,
        )


def check_profiles(recipe: Recipe, source: str, overrides: Any = None) -> None:
    """Every runtime profile that names another build's interpreter can run it here: the file
    exists, is executable and imports onnxruntime (what its measuring processes need)."""
    from onnxforge.profiles import check_interpreter, runtime_build

    for index, profile in enumerate(recipe.benchmark.profiles):
        field = f"benchmark.profiles[{index}]"
        problem = check_interpreter(profile, field)
        if problem is None and profile.python and not runtime_build(profile.python)["onnxruntime"]:
            problem = (
                f"{field}.python: {profile.python} cannot import onnxruntime; expected the "
                "interpreter of an environment with an onnxruntime build (and numpy)"
            )
        if problem is not None:
            _refuse(source, problem, overrides)


def check_dispatch_servers(recipe: Recipe, source: str, overrides: Any = None) -> None:
    """A recipe that maps a provider to a pool needs servers a worker on another host can
    reach: an MLflow tracking server and a Prefect server (PREFECT_API_URL, which is also what
    makes `onnxforge run` use a server instead of starting its own temporary one)."""
    from onnxforge.procs import EMBEDDED_SERVER_ENV

    if not recipe.benchmark.pools:
        return
    mapped = ", ".join(f"{p} -> {pool}" for p, pool in recipe.benchmark.pools.items())
    needs = f"benchmark.pools: {mapped} dispatches to work pools, which needs the team servers"
    tracking = resolve_tracking_uri()
    if not tracking.startswith(("http://", "https://")):
        _refuse(
            source,
            f"{needs}: runs are tracked in {tracking}, which a worker cannot reach; export "
            "MLFLOW_TRACKING_URI (and its credentials) as `make stack` prints",
            overrides,
        )
    if os.environ.get(EMBEDDED_SERVER_ENV) or not os.environ.get("PREFECT_API_URL"):
        _refuse(
            source,
            f"{needs}: no Prefect server is set (PREFECT_API_URL), so no worker can pick the "
            "benchmark up; export it as `make stack` prints",
            overrides,
        )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _whole_message(error: BaseException) -> str:
    """Every line of a tool's message on one line: ORT puts the offending index and the expected
    size on the lines after its first ("index: 0 Got: 2 Expected: 1")."""
    return " ".join(str(error).split()) or type(error).__name__


def _refuse(source: str, message: str, overrides: Any = None) -> NoReturn:
    """RecipeError 'file:line: field: ...' (the line of the field the message starts with)."""
    field = leading_field(message)
    where = field_location(source, field, overrides) if field else source
    raise RecipeError(f"{where}: {message}")


def check_data_and_model(recipe: Recipe, source: str, overrides: Any = None) -> None:
    """Load the data, build the model, load its checkpoint and run two samples through it."""
    try:
        splits = load_splits(recipe.dataset)
    except RecipeError as error:
        _refuse(source, str(error), overrides)
    except ValueError as error:
        _refuse(source, f"dataset: {error}", overrides)
    _check_task(recipe, splits, source, overrides)
    from onnxforge.training import check_no_random_weights, fresh_model

    adapter = get_adapter(recipe.model.framework)
    architecture = architecture_of(recipe.model)
    try:
        adapter.check_source(recipe.model)
        adapter.check_recipe(recipe)  # e.g. a brought file's fixed batch against the objective
    except ValueError as error:
        _refuse(source, str(error), overrides)
    samples = describe(splits.x_train)  # e.g. "(1, 8, 8) float32", or one entry per named input
    label = recipe.model.architecture or str(recipe.model.file)
    try:
        check_seed("train.seed", recipe.train.seed)
    except RecipeError as error:
        _refuse(source, str(error), overrides)
    try:
        model = fresh_model(recipe, splits)
    except Exception as error:  # noqa: BLE001 - bad kwargs or a shape the architecture can't take
        _refuse(source, _build_failure(recipe, label, samples, error), overrides)
    _check_dynamic_axes(recipe, splits, source, overrides)
    try:
        check_no_random_weights(recipe, model)
    except ValueError as error:
        _refuse(source, str(error), overrides)
    try:
        for part in (splits.x_train, splits.x_val, splits.x_test):
            architecture.check_inputs(model, part)  # e.g. token ids the vocabulary has
    except ValueError as error:
        _refuse(source, str(error), overrides)
    if recipe.model.checkpoint is not None:
        try:
            adapter.load_checkpoint(model, recipe.model.checkpoint)
        except Exception as error:  # noqa: BLE001 - any load failure is a recipe problem
            _refuse(
                source,
                f"model.checkpoint: {recipe.model.checkpoint} does not fit model {label!r}: "
                f"{_first_line(error)}",
                overrides,
            )
    try:
        outputs = adapter.predict(model, take(splits.x_train, slice(0, 2)))
    except Exception as error:  # noqa: BLE001
        _refuse(
            source,
            f"dataset: samples {samples} do not fit model {label!r}: {_whole_message(error)}",
            overrides,
        )
    _check_labels_fit(recipe, splits, np.asarray(outputs[0]), label, source, overrides)


# Python's own words when a call's arguments do not match the callable's parameters
_ARGUMENT_ERRORS = (
    "unexpected keyword argument",
    "required positional argument",
    "required keyword",
)


def _build_failure(recipe: Recipe, label: str, samples: str, error: Exception) -> str:
    """'field: ...' for a model that cannot be built: a model file that does not load, kwargs
    the architecture does not take, or (either one) kwargs and samples that do not fit."""
    if recipe.model.file is not None:
        return f"model.file: {recipe.model.file} cannot be loaded: {_whole_message(error)}"
    if isinstance(error, TypeError) and any(words in str(error) for words in _ARGUMENT_ERRORS):
        return (
            f"model.kwargs: {label!r} does not take {recipe.model.kwargs}: "
            f"{_first_line(error)}; expected the arguments its constructor takes"
        )
    return (
        f"model.kwargs / dataset.sample_shape: cannot build {label!r} with "
        f"{recipe.model.kwargs} for samples {samples}: {_first_line(error)}"
    )


# The name both exporting adapters give a model's single input (named inputs keep their names).
SINGLE_INPUT = "input"


def _model_inputs(recipe: Recipe, splits: Any) -> dict[str, int]:
    """Input name -> rank (with the batch) of the ONNX graph the export writes: the data's
    names and ranks, or a brought ONNX file's own inputs."""
    if get_adapter(recipe.model.framework).keeps_file_shapes and recipe.model.file is not None:
        import onnx

        graph = onnx.load(str(recipe.model.file), load_external_data=False).graph
        initializers = {init.name for init in graph.initializer}
        return {
            i.name: len(i.type.tensor_type.shape.dim)
            for i in graph.input
            if i.name not in initializers
        }
    features = splits.x_train
    arrays = features if isinstance(features, dict) else {SINGLE_INPUT: features}
    return {name: array.ndim for name, array in arrays.items()}


def _check_dynamic_axes(recipe: Recipe, splits: Any, source: str, overrides: Any) -> None:
    """export.dynamic_axes names inputs the model has, dimensions within each input's rank and,
    for a model onnxforge exports, the batch (dimension 0) of every input: a fixed batch is
    the export example's size, which no benchmark batch size or parity chunk matches."""
    spec = recipe.export
    inputs = _model_inputs(recipe, splits)
    shown = ", ".join(inputs)
    if not all(isinstance(key, int) for key in spec.dynamic_axes):
        for name in spec.dynamic_axes:
            if name not in inputs:
                _refuse(
                    source,
                    f"export.dynamic_axes.{name}: the model has no input named {name!r}; "
                    f"expected one of {shown}",
                    overrides,
                )
    for name, rank in inputs.items():
        for dim, axis in spec.axes_for(name).items():
            if dim >= rank:
                _refuse(
                    source,
                    f"export.dynamic_axes: dimension {dim} ({axis}) of input {name!r} does not "
                    f"exist: the input has {rank} dimensions (0..{rank - 1}, the batch first)",
                    overrides,
                )
    if get_adapter(recipe.model.framework).keeps_file_shapes:
        return  # a brought file keeps its dims; export.make_batch_dynamic rewrites a fixed batch
    unbatched = [name for name in inputs if 0 not in spec.axes_for(name)]
    if unbatched:
        _refuse(
            source,
            f"export.dynamic_axes: input {unbatched[0]!r} has no dynamic batch (dimension 0), so "
            "the export would fix its batch at the export example's size and the benchmark's "
            f"batch sizes could not run; expected dimension 0 for every input ({shown}), e.g. "
            "{0: batch}",
            overrides,
        )


def _check_task(recipe: Recipe, splits: Any, source: str, overrides: Any) -> None:
    """Training needs labels, and a regression target needs a model that trains on one.

    Labels read as regression only because some are fractional, fed to a classifier, are most
    likely corrupt class ids: they are refused as class ids, naming the first fractional one.
    """
    if not recipe.train.enabled:
        return
    if splits.task == "none":
        _refuse(
            source,
            "train.enabled: the dataset has no labels to train on (task_type none); set it to "
            "false, or name the labels",
            overrides,
        )
    if splits.task != "regression" or architecture_of(recipe.model).trains_regression:
        return
    label = recipe.model.architecture or recipe.model.framework
    classifier = (
        f"{recipe.model.framework} model {label!r} is trained as a classifier; regression "
        "trains a PyTorch mlp or module of your own, or takes a trained model "
        "(train.enabled: false)"
    )
    # Inferred from fractional labels (not from a known regression set such as diabetes): the
    # labels may be a corrupt class column, so say what reading them as classes finds.
    if recipe.dataset.task_type is None and recipe.dataset.source != "sklearn":
        try:
            load_splits(recipe.dataset.model_copy(update={"task_type": "classification"}))
        except RecipeError as error:
            _refuse(source, f"{error}; {classifier}", overrides)
    _refuse(source, f"train.enabled: {classifier}", overrides)


def _check_labels_fit(
    recipe: Recipe, splits: Any, first_output: np.ndarray, label: str, source: str, overrides: Any
) -> None:
    """The labels fit the model's first output: a regression target has as many values per
    sample as the output; a classifier's labels index its scores (label < scores per sample).

    Outputs read as in scoring.py: (N, K >= 2) is K class scores; one value per sample is a
    regression head, with nothing to compare against class ids.
    """
    field = {"npz": "dataset.labels", "csv": "dataset.label", "parquet": "dataset.label"}
    if splits.task == "regression":
        per_sample = int(np.prod(splits.y_train.shape[1:], dtype=np.int64))
        got = int(np.prod(first_output.shape[1:], dtype=np.int64))
        if got != per_sample:
            _refuse(
                source,
                f"{field.get(recipe.dataset.source, 'dataset')}: the regression target has "
                f"{per_sample} value(s) per sample, but model {label!r} outputs {got}",
                overrides,
            )
        return
    if splits.task != "classification" or not is_class_scores(first_output):
        return
    highest = int(
        max(
            (part.max() for part in (splits.y_train, splits.y_val, splits.y_test) if part.size),
            default=-1,
        )
    )
    scores = first_output.shape[1]
    if highest >= scores:
        _refuse(
            source,
            f"{field.get(recipe.dataset.source, 'dataset')}: labels go up to {highest}, but "
            f"model {label!r} outputs {scores} class scores per sample; expected labels "
            f"0..{scores - 1}",
            overrides,
        )


def _passed_key(path: str, recipe: Recipe) -> str:
    """What the data-and-model check depends on: the recipe as loaded, the bytes of the recipe
    file, the files it reads (size, mtime) and the import allow-list."""
    files = [recipe.model.file, recipe.model.checkpoint, getattr(recipe.dataset, "path", None)]
    stats = [
        (str(file), file.stat().st_mtime_ns, file.stat().st_size)
        for file in files
        if file is not None and file.exists()
    ]
    recipe_bytes = Path(path).read_bytes()
    return json.dumps(
        [
            str(Path(path).resolve()),
            hashlib.sha256(recipe_bytes).hexdigest(),
            recipe.model_dump_json(by_alias=True),
            stats,
            allowed_modules(),
        ]
    )


def load_and_check(path: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Schema check, then preflight: everything `onnxforge validate` promises.

    Called twice by `onnxforge run` (the CLI, then the flow's first task): in one process the
    data-and-model part runs once for the same inputs.
    """
    recipe = load_recipe(path, overrides)
    check_home()
    check_objective_provider(recipe, path, overrides)
    check_dispatch_servers(recipe, path, overrides)
    check_profiles(recipe, path, overrides)
    key = _passed_key(path, recipe)
    if key not in _PASSED:
        check_data_and_model(recipe, path, overrides)
        _PASSED.add(key)
    return recipe
