"""The `onnxforge` command: `run` a recipe through the flow, or `validate` it without work;
`pull`, `verify`, `promote` and `rollback` are the registry's consumer side.

Heavy imports (torch, onnxruntime, Prefect, MLflow) happen inside the commands, so --help is instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 1  # a tampered file, a missing version, a refused alias move


def _add_verbose(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help=(
            "show third-party warnings and log chatter (TensorFlow, torch, ONNX Runtime, ...) "
            "as the libraries print them; by default they go to DEBUG logging "
            "(also ONNXFORGE_VERBOSE=1)"
        ),
    )


def _common() -> argparse.ArgumentParser:
    """Options every command takes after its name (and `onnxforge` before it)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a command that is not given the flag keeps what came before the command
    _add_verbose(common, argparse.SUPPRESS)
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxforge",
        description="Train, export, simplify, quantize, validate, benchmark and register ONNX models.",
    )
    _add_verbose(parser, False)
    commands = parser.add_subparsers(dest="command", required=True)
    common = _common()
    run = commands.add_parser(
        "run", parents=[common], help="run a recipe end to end (Prefect flow, MLflow tracking)"
    )
    validate = commands.add_parser(
        "validate", parents=[common], help="check a recipe (schema, files, model fit); no work"
    )
    for sub in (run, validate):
        sub.add_argument("recipe", help="path to a recipe YAML, e.g. configs/digits_cnn.yaml")
        sub.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=(
                "override a recipe value by dotted key, e.g. --set train.epochs=5 or "
                "--set variants.int8-static.per_channel=false (repeatable; quote a segment: "
                'variants."int8-static".per_channel); overrides may not change model code or '
                "file paths unless ONNXFORGE_TRUSTED_OVERRIDES=1, and may tighten the promotion "
                "bar (floors, margins, budgets, tolerances) but not loosen it or change the "
                "objective unless ONNXFORGE_TRUSTED_BAR=1"
            ),
        )
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="train, export and build every variant again, even when stored results match",
    )
    _registry_parsers(commands, common)
    return parser


def _registry_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """The consumer side: verified pulls, checks of every version, alias moves by hand."""
    pull = commands.add_parser(
        "pull",
        parents=[common],
        help="download a registered model, check its sha256, write model.onnx + manifest",
    )
    pull.add_argument("ref", help="NAME, NAME@ALIAS or NAME/VERSION (default alias: champion)")
    pull.add_argument(
        "--provider", help="execution provider; without an alias, pulls champion-<provider>"
    )
    pull.add_argument(
        "--to",
        help=(
            "folder to write model.onnx and manifest.json (default: pulled/NAME@ALIAS, or "
            "pulled/NAME@vN, under the working folder: one folder per alias)"
        ),
    )
    verify = commands.add_parser(
        "verify", parents=[common], help="check every version's file against its sha256"
    )
    verify.add_argument("name", help="registered model name")
    promote = commands.add_parser(
        "promote", parents=[common], help="move an alias to a version by hand (checked)"
    )
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", help="version number")
    promote.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    promote.add_argument("--reason", required=True, help="why; kept in the alias history")
    rollback = commands.add_parser(
        "rollback",
        parents=[common],
        help="move an alias back to where it was before its last recorded move",
    )
    rollback.add_argument("name", help="registered model name")
    rollback.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    rollback.add_argument("--reason", default=None, help="why; kept in the alias history")
    for sub in (promote, rollback):
        sub.add_argument(
            "--force",
            action="store_true",
            help=(
                "move the alias even to a version below a quality floor (its `floors` tag); "
                "the alias history records the move as forced, with the floors and the reason"
            ),
        )


def _embedded_defaults() -> None:
    """With no Prefect server configured, keep Prefect's temporary server's state in the project."""
    from onnxforge.tracking import state_dir

    if not os.environ.get("PREFECT_API_URL") and "PREFECT_HOME" not in os.environ:
        home = state_dir() / "prefect"
        home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last path component
        os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from onnxforge.tracking import bounded_http_retries

    bounded_http_retries()  # before MLflow is first used: an outage fails a call in ~1 minute


def _validate(recipe_path: str, overrides: list[str]) -> tuple[object, dict[str, str]]:
    from onnxforge.overrides import parse_overrides
    from onnxforge.preflight import load_and_check

    parsed = parse_overrides(overrides)
    return load_and_check(recipe_path, parsed), parsed


def _interrupt_as_sigterm(signum: int, frame: object) -> None:
    """Ctrl-C takes SIGTERM's path: Prefect turns SIGTERM into a crashed flow run (the on_crashed
    hook ends the MLflow run KILLED), then the process ends and its children die with it.
    Python's own KeyboardInterrupt would surface wherever the main thread happens to be."""
    os.kill(os.getpid(), signal.SIGTERM)


def _one_line_failures() -> None:
    """Prefect logs a failed task's exception with its traceback. On the console, the errors that
    already say in one line what is wrong and where (a refused recipe, a data file removed after
    the preflight, a refused file) are logged without it."""
    import logging

    from onnxforge.errors import OnnxforgeError, RecipeError

    def drop_traceback(record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RecipeError | OnnxforgeError):
            record.exc_info, record.exc_text = None, None
        return True

    # Prefect's console handler sits on the root logger; its API handler (the UI's log, which
    # keeps the traceback) on the run loggers, which see a record first.
    for handler in logging.getLogger().handlers:
        handler.addFilter(drop_traceback)


def _run(recipe_path: str, overrides: dict[str, str], no_cache: bool = False) -> int:
    signal.signal(signal.SIGINT, _interrupt_as_sigterm)
    _embedded_defaults()
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect's own temporary server outlives a SIGKILLed CLI; this one dies with it.
        from flows.embedded_server import start_embedded_server

        start_embedded_server()
    from flows.onnx_pipeline import onnx_pipeline
    from onnxforge.tracking import resolve_tracking_uri, ui_command

    _one_line_failures()  # Prefect's log handlers exist once Prefect is imported

    registration = onnx_pipeline(
        recipe_path=recipe_path, overrides=overrides or None, no_cache=no_cache
    )
    print()
    if registration.version is None:
        print(f"Nothing registered: {registration.reason}")
    else:
        moved = [d.alias for d in registration.decisions if d.move]
        print(
            f"Registered model: {registration.model_name} version {registration.version} "
            f"({registration.variant}); aliases: {', '.join(moved) or 'none'}"
        )
        print(f"  champion: {registration.reason}")
        name = registration.model_name
        if "champion" in moved:
            print(f"  deploy it with: onnxforge pull {name}@champion --to ./model")
        else:  # the champion, if any, is another version: name this one by its number
            print(
                f"  fetch this version with: onnxforge pull {name}/{registration.version} --to DIR"
            )
    tracking_uri = resolve_tracking_uri()
    print(f"MLflow tracking URI: {tracking_uri}")
    then = "" if tracking_uri.startswith("http") else "  (then http://127.0.0.1:5000)"
    print(f"See it in the MLflow UI: {ui_command(tracking_uri)}{then}")
    return 0


def _one_line(error: BaseException) -> str:
    """An error as one line (MLflow's messages can carry a whole HTML response body)."""
    text = " ".join(str(error).split())
    return text if len(text) <= 600 else text[:597] + "..."


def _registry_command(args: argparse.Namespace) -> int:
    """pull / verify / promote / rollback: exit 1 when refused or tampered, 2 for bad arguments."""
    if not sys.stderr.isatty():  # MLflow's download progress bar would clutter a log's stderr
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from onnxforge.errors import OnnxforgeError, UsageError

    try:
        return _REGISTRY_COMMANDS[args.command](args)
    except UsageError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OnnxforgeError, MlflowException, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_REFUSED


def _pull(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxforge.consumer import default_folder, pull
    from onnxforge.tracking import existing_tracking_uri

    to = Path(args.to) if args.to else default_folder(args.ref, args.provider)
    manifest = pull(existing_tracking_uri(), args.ref, to, args.provider)
    print(
        f"pulled {manifest['name']} v{manifest['version']} ({manifest['variant']}), "
        f"sha256 {manifest['sha256']} verified -> {to / 'model.onnx'}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from onnxforge.consumer import verify
    from onnxforge.tracking import existing_tracking_uri

    results = verify(existing_tracking_uri(), args.name)
    if not results:
        print(f"{args.name}: no versions")
    for version, ok, message in results:
        print(f"v{version}: {'ok' if ok else 'FAILED'}: {message}")
    failed = [version for version, ok, _ in results if not ok]
    if failed:
        print(
            f"error: {args.name}: {len(failed)} version(s) fail the sha256 check", file=sys.stderr
        )
        return EXIT_REFUSED
    return 0


def _print_move(name: str, move: dict) -> None:
    if not move["moved"]:
        print(f"{name}@{move['alias']} already points at v{move['version']}; nothing moved")
        return
    was = f"v{move['previous']}" if move["previous"] else "nothing"
    forced = (
        f" (forced past the quality floors: {move['forced_past']})" if "forced_past" in move else ""
    )
    print(f"{name}@{move['alias']}: {was} -> v{move['version']}{forced}")


def _promote(args: argparse.Namespace) -> int:
    from onnxforge.consumer import promote, promote_forced
    from onnxforge.tracking import existing_tracking_uri

    move_to = promote_forced if args.force else promote
    move = move_to(existing_tracking_uri(), args.name, args.version, args.alias, args.reason)
    _print_move(args.name, move)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from onnxforge.consumer import rollback
    from onnxforge.tracking import existing_tracking_uri

    move = rollback(
        existing_tracking_uri(), args.name, args.alias, reason=args.reason, force=args.force
    )
    _print_move(args.name, move)
    return 0


_REGISTRY_COMMANDS = {"pull": _pull, "verify": _verify, "promote": _promote, "rollback": _rollback}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `onnxforge` command."""
    args = _parser().parse_args(argv)
    from onnxforge.chatter import route_third_party_output

    route_third_party_output(args.verbose or None)  # before any heavy import reads the env
    if args.command in _REGISTRY_COMMANDS:
        return _registry_command(args)
    from onnxforge.errors import RecipeError

    try:
        recipe, overrides = _validate(args.recipe, args.overrides)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "validate":
        print(f"{args.recipe}: valid recipe {recipe.name!r}")  # type: ignore[attr-defined]
        return 0
    try:
        return _run(args.recipe, overrides, args.no_cache)
    except RecipeError as error:  # refused by the flow's own check (a file changed meanwhile)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
