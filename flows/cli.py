"""The `onnxforge` command: `run` a recipe through the flow, or `validate` it without work.

Heavy imports (torch, onnxruntime, Prefect, MLflow) happen inside the commands, so --help is instant.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxforge",
        description="Train, export, simplify, quantize, validate, benchmark and register ONNX models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a recipe end to end (Prefect flow, MLflow tracking)")
    validate = commands.add_parser(
        "validate", help="check a recipe (schema, files, model fit); no work"
    )
    for sub in (run, validate):
        sub.add_argument("recipe", help="path to a recipe YAML, e.g. configs/digits_cnn.yaml")
        sub.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a recipe field by dotted key, e.g. --set train.epochs=5 (repeatable)",
        )
    return parser


def _embedded_defaults() -> None:
    """With no Prefect server configured, keep Prefect's temporary server's state in the project."""
    from onnxforge.tracking import state_dir

    if not os.environ.get("PREFECT_API_URL") and "PREFECT_HOME" not in os.environ:
        home = state_dir() / "prefect"
        home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last path component
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh home runs database migrations first; 20 s (the default) is too short on 2 cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _validate(recipe_path: str, overrides: list[str]) -> tuple[object, dict[str, str]]:
    from onnxforge.preflight import load_and_check
    from onnxforge.recipe import parse_overrides

    parsed = parse_overrides(overrides)
    return load_and_check(recipe_path, parsed), parsed


def _run(recipe_path: str, overrides: dict[str, str]) -> int:
    _embedded_defaults()
    from flows.onnx_pipeline import onnx_pipeline
    from onnxforge.tracking import resolve_tracking_uri, ui_command

    registration = onnx_pipeline(recipe_path=recipe_path, overrides=overrides or None)
    print()
    if registration.version is None:
        print(f"Nothing registered: {registration.reason}")
    else:
        aliases = "challenger" + (", champion" if registration.champion_moved else "")
        print(
            f"Registered model: {registration.model_name} version {registration.version} "
            f"({registration.variant}); aliases: {aliases}"
        )
        print(
            f"  load it with: mlflow.onnx.load_model('models:/{registration.model_name}@champion')"
        )
        print(f"  champion: {registration.reason}")
    print(f"MLflow tracking URI: {resolve_tracking_uri()}")
    print(
        f"See it in the MLflow UI: {ui_command(resolve_tracking_uri())}  (then http://127.0.0.1:5000)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `onnxforge` command."""
    args = _parser().parse_args(argv)
    from onnxforge.errors import RecipeError

    try:
        recipe, overrides = _validate(args.recipe, args.overrides)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "validate":
        print(f"{args.recipe}: valid recipe {recipe.name!r}")  # type: ignore[attr-defined]
        return 0
    return _run(args.recipe, overrides)


if __name__ == "__main__":
    sys.exit(main())
