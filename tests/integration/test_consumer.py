"""The registry's consumer side against a real `mlflow server`: verified pulls, verify, promote,
rollback, and fail-closed alias reads."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from onnxforge.onnx_files import sha256_of
from tests.servers import MlflowServer, free_port

REPO = Path(__file__).resolve().parents[2]
P50_TAG = "p50_ms.CPUExecutionProvider.bs1"


@pytest.fixture
def server(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """The session's server, with MLflow (and the CLI's resolve_tracking_uri) pointed at it."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.uri)  # restored (or removed) after
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("ONNXFORGE_ACTOR", "tester")
    yield mlflow_server
    # set_tracking_uri keeps a process-wide global: leave none behind for other tests.
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _weights(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)


def _write_onnx(path: Path, seed: int) -> None:
    """MatMul + Softmax over a symbolic batch: small, real, and its weights easy to find."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(_weights(seed), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this onnxruntime reads
    onnx.save(model, path)


def _register(uri: str, name: str, seed: int, tmp_path: Path, **extra: str) -> str:
    """Log a LoggedModel the way the pipeline does and register it with self-describing tags."""
    import mlflow
    import mlflow.onnx
    import onnx

    path = tmp_path / f"{name}-{seed}.onnx"
    _write_onnx(path, seed)
    from onnxforge.tracking import client, ensure_experiment

    client(uri)
    # ensure_experiment keeps an embedded store's artifacts in ONNXFORGE_HOME, not ./mlruns
    mlflow.set_experiment(experiment_id=ensure_experiment(uri, "consumer-tests"))
    with mlflow.start_run() as run:
        logged = mlflow.onnx.log_model(onnx.load(path), name="model", save_as_external_data=False)
    tags = {
        "sha256": sha256_of(path),  # of the file written here, as the pipeline records it
        "variant": "fp32",
        "provider": "CPUExecutionProvider",
        "parity.max_abs_err": repr(1.5e-7),
        P50_TAG: "0.0421",
        "onnxruntime_version": "1.20.0",
        "source_run_id": run.info.run_id,
        "promotion": "champion moved: no champion yet",
        "onnxforge.state": "done",
        **extra,
    }
    version = mlflow.register_model(f"models:/{logged.model_id}", name, tags=tags)
    return str(version.version)


def _stored_file(server: MlflowServer, name: str, version: str) -> Path:
    """The model.onnx the server keeps for a version, inside its artifacts folder."""
    from onnxforge.tracking import client

    source = client(server.uri).get_model_version(name, version).source  # models:/<model_id>
    model_id = source.rsplit("/", 1)[-1]
    found = [p for p in server.artifacts_dir.rglob("model.onnx") if model_id in p.parts]
    assert len(found) == 1, found
    return found[0]


def _flip_one_weight_sign(server: MlflowServer, name: str, version: str, seed: int) -> None:
    """The attack from the issue: one weight's sign bit flipped in the artifact store."""
    stored = _stored_file(server, name, version)
    data = bytearray(stored.read_bytes())
    at = data.find(_weights(seed).tobytes())
    assert at >= 0
    data[at + 3] ^= 0x80  # little-endian float32: the sign is the top bit of the 4th byte
    stored.write_bytes(bytes(data))


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _cli(*args: str, server: MlflowServer) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    }
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # the CLI must silence it itself
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------- pull


def test_pull_by_alias_version_and_provider(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime as ort

    from flows.cli import main
    from onnxforge.aliases import MoveNote, move_alias
    from onnxforge.consumer import pull
    from onnxforge.tracking import client

    name = _unique("pull")
    first = _register(server.uri, name, 1, tmp_path)
    second = _register(server.uri, name, 2, tmp_path)
    mlflow_client = client(server.uri)
    move_alias(mlflow_client, name, "champion", second, MoveNote("test", "tester"))
    move_alias(mlflow_client, name, "champion-cpu", first, MoveNote("test", "tester"))

    manifest = pull(server.uri, f"{name}@champion", tmp_path / "a" / "model", None)
    folder = tmp_path / "a" / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert sha256_of(folder / "model.onnx") == manifest["sha256"]
    assert manifest["name"] == name and manifest["version"] == second
    assert manifest["aliases"] == ["champion"] and manifest["variant"] == "fp32"
    assert manifest["provider"] == "CPUExecutionProvider"
    assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 4], "elem_type": "float"}]
    assert manifest["outputs"] == [{"name": "probs", "shape": ["batch", 3], "elem_type": "float"}]
    assert manifest["parity"] == {"max_abs_err": 1.5e-7}
    assert manifest["latency"] == {P50_TAG: 0.0421}
    assert manifest["onnxruntime_version"] == "1.20.0"
    assert manifest["onnxruntime_local"] == ort.__version__
    assert manifest["source_run_id"] and manifest["promotion"].startswith("champion moved")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((2, 4), np.float32)})[0].shape == (2, 3)

    # NAME/VERSION, and --provider picking champion-<short>; a second pull replaces the first.
    by_version = pull(server.uri, f"{name}/{first}", folder, None)
    assert by_version["version"] == first and by_version["alias"] is None
    assert sha256_of(folder / "model.onnx") == by_version["sha256"] != manifest["sha256"]
    by_provider = pull(server.uri, name, tmp_path / "cpu", "CPUExecutionProvider")
    assert by_provider["version"] == first and by_provider["alias"] == "champion-cpu"
    capsys.readouterr()  # drop MLflow's "View run" lines from the registration
    assert main(["pull", f"{name}@champion", "--to", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"pulled {name} v{second} (fp32), sha256 {manifest['sha256']} verified")
    leftovers = [p for p in (*tmp_path.iterdir(), *(tmp_path / "a").iterdir()) if p.name[0] == "."]
    assert leftovers == []  # no staging or retired folders


def test_pull_refuses_a_foreign_folder_and_bad_arguments(
    server: MlflowServer, tmp_path: Path
) -> None:
    from onnxforge.consumer import parse_ref, pull
    from onnxforge.errors import RefusedError, UsageError

    foreign = tmp_path / "app"
    foreign.mkdir()
    (foreign / "main.py").write_text("print('hi')\n")
    with pytest.raises(UsageError, match="not empty and not a previous pull"):
        pull(server.uri, "anything", foreign, None)
    with pytest.raises(UsageError, match="unknown provider 'FooProvider'; expected one of CPU"):
        parse_ref("m", "FooProvider")
    for bad in ("m/0", "m/x", "@champion", "m@latest", "m@bad alias"):
        with pytest.raises(UsageError):
            parse_ref(bad)
    assert parse_ref("m") == ("m", "champion", None)
    assert parse_ref("m@challenger", "CUDAExecutionProvider") == ("m", "challenger", None)
    assert parse_ref("m", "CUDAExecutionProvider") == ("m", "champion-cuda", None)
    with pytest.raises(RefusedError, match="no registered model named"):
        pull(server.uri, _unique("nobody"), tmp_path / "x", None)
    assert not (tmp_path / "x").exists()


def test_cli_usage_errors_are_one_line_exit_2(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    assert main(["pull", "m", "--provider", "FooProvider", "--to", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown provider 'FooProvider'")
    assert main(["promote", "m", "1", "--reason", "  "]) == 2
    assert capsys.readouterr().err.startswith("error: --reason is required")


# ---------------------------------------------------------------- a tampered champion


@pytest.fixture(scope="module")
def tampered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 intact, v2 champion with one weight sign flipped in the server's artifact store."""
    from onnxforge.aliases import MoveNote, move_alias
    from onnxforge.tracking import client

    tmp = tmp_path_factory.mktemp("tampered")
    name = _unique("tampered")
    good = _register(mlflow_server.uri, name, 11, tmp)
    bad = _register(mlflow_server.uri, name, 12, tmp)
    move_alias(client(mlflow_server.uri), name, "champion", bad, MoveNote("test", "tester"))
    _flip_one_weight_sign(mlflow_server, name, bad, 12)
    return {"name": name, "good": good, "bad": bad}


def test_bare_mlflow_load_model_accepts_the_tampered_file(
    server: MlflowServer, tampered: dict
) -> None:
    """The issue's premise, kept as a test: MLflow itself does not notice."""
    import mlflow
    import mlflow.onnx

    mlflow.set_registry_uri(server.uri)
    model = mlflow.onnx.load_model(f"models:/{tampered['name']}@champion")
    assert model.graph.node[0].op_type == "MatMul"


def test_cli_pull_of_tampered_champion_fails_one_line_and_writes_nothing(
    server: MlflowServer, tampered: dict, tmp_path: Path
) -> None:
    to = tmp_path / "deploy" / "model"
    result = _cli("pull", f"{tampered['name']}@champion", "--to", str(to), server=server)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {tampered['name']} v{tampered['bad']}: sha256 mismatch")
    assert "expected " in lines[0] and ", got " in lines[0]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # not even the parent folder or a staging folder


def test_verify_reports_the_tampered_version(server: MlflowServer, tampered: dict) -> None:
    from onnxforge.consumer import verify

    results = verify(server.uri, tampered["name"])
    assert [(version, ok) for version, ok, _ in results] == [
        (tampered["good"], True),
        (tampered["bad"], False),
    ]
    assert "sha256 mismatch" in results[1][2] and "[champion]" in results[1][2]

    cli = _cli("verify", tampered["name"], server=server)
    assert cli.returncode == 1
    assert f"v{tampered['bad']}: FAILED" in cli.stdout and f"v{tampered['good']}: ok" in cli.stdout
    assert cli.stderr.splitlines() == [
        f"error: {tampered['name']}: 1 version(s) fail the sha256 check"
    ]


def test_promote_refuses_the_tampered_version(server: MlflowServer, tampered: dict) -> None:
    from onnxforge.aliases import alias_history, current_version
    from onnxforge.consumer import promote
    from onnxforge.errors import IntegrityError
    from onnxforge.tracking import client

    mlflow_client = client(server.uri)
    before = alias_history(mlflow_client, tampered["name"])
    with pytest.raises(IntegrityError, match="refusing to move champion-cpu: .*sha256 mismatch"):
        promote(server.uri, tampered["name"], tampered["bad"], "champion-cpu", "try", "x")
    assert current_version(mlflow_client, tampered["name"], "champion-cpu") is None
    assert alias_history(mlflow_client, tampered["name"]) == before


# ---------------------------------------------------------------- promote / rollback


def test_promote_records_history_and_rollback_undoes_the_last_move(
    server: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from onnxforge.aliases import alias_history, current_version
    from onnxforge.consumer import promote, rollback
    from onnxforge.errors import RefusedError
    from onnxforge.tracking import client

    name = _unique("promote")
    first = _register(server.uri, name, 21, tmp_path)
    second = _register(server.uri, name, 22, tmp_path)
    mlflow_client = client(server.uri)
    with pytest.raises(RefusedError, match="no recorded moves"):
        rollback(server.uri, name)

    assert promote(server.uri, name, first, reason="first deploy", by="alice")["previous"] is None
    capsys.readouterr()  # drop MLflow's "View run" lines from the registration
    assert main(["promote", name, second, "--reason", "faster on cpu"]) == 0
    assert capsys.readouterr().out.strip() == f"{name}@champion: v{first} -> v{second}"
    assert str(current_version(mlflow_client, name, "champion").version) == second

    history = alias_history(mlflow_client, name, "champion")
    assert [(e["version"], e["previous"], e["by"], e["reason"]) for e in history] == [
        (first, None, "alice", "first deploy"),
        (second, first, "tester", "faster on cpu"),
    ]
    assert all(datetime.fromisoformat(e["at"]).utcoffset().total_seconds() == 0 for e in history)
    assert all(e["alias"] == "champion" and e["run_id"] is None for e in history)
    promotion = mlflow_client.get_model_version(name, second).tags["promotion"]
    assert promotion.endswith("champion moved by hand by tester: faster on cpu")

    moved = rollback(server.uri, name, by="carol", reason="p99 regression in prod")
    assert (moved["version"], moved["previous"]) == (first, second)
    assert str(current_version(mlflow_client, name, "champion").version) == first
    last = alias_history(mlflow_client, name)[-1]
    assert (last["by"], last["previous"]) == ("carol", second)
    assert last["reason"].startswith("p99 regression in prod (undoes the move of")

    # Moved outside onnxforge: "undo the last move" no longer means anything safe.
    mlflow_client.set_registered_model_alias(name, "champion", second)
    with pytest.raises(RefusedError, match="last recorded move was to"):
        rollback(server.uri, name)
    assert main(["rollback", name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {name}@champion points at v{second}")


def test_promote_refuses_missing_and_incomplete_versions(
    server: MlflowServer, tmp_path: Path
) -> None:
    from onnxforge.consumer import promote
    from onnxforge.errors import RefusedError

    name = _unique("refuse")
    half_done = _register(
        server.uri,
        name,
        31,
        tmp_path,
        promotion="incomplete: run abc stopped before its aliases moved",
    )
    with pytest.raises(RefusedError, match="incomplete: run abc"):
        promote(server.uri, name, half_done, reason="why not", by="x")
    with pytest.raises(RefusedError, match=f"{name} has no version 7"):
        promote(server.uri, name, "7", reason="why not", by="x")
    with pytest.raises(RefusedError, match="no registered model named"):
        promote(server.uri, _unique("nobody"), "1", reason="why not", by="x")


def test_history_stays_under_the_tag_limit(server: MlflowServer, tmp_path: Path) -> None:
    from onnxforge.aliases import (
        HISTORY_TAG_LIMIT,
        HISTORY_TAG_PREFIX,
        MoveNote,
        alias_history,
        move_alias,
    )
    from onnxforge.tracking import client

    name = _unique("history")
    versions = [
        _register(server.uri, name, 41, tmp_path),
        _register(server.uri, name, 42, tmp_path),
    ]
    mlflow_client = client(server.uri)
    for step in range(14):
        note = MoveNote(f"{step} " + "x" * 900, "me")
        move_alias(mlflow_client, name, "challenger", versions[step % 2], note)
    stored = mlflow_client.get_registered_model(name).tags[HISTORY_TAG_PREFIX + "challenger"]
    assert len(stored) <= HISTORY_TAG_LIMIT
    events = alias_history(mlflow_client, name, "challenger")
    assert 3 <= len(events) < 14 and events[-1]["reason"].startswith("13 ")
    assert [int(e["reason"].split()[0]) for e in events] == list(range(14 - len(events), 14))


def test_pull_from_the_embedded_sqlite_store(mlflow_store: str, tmp_path: Path) -> None:
    """The default store (`make run`, no server): file artifacts, the same checks."""
    import mlflow

    from onnxforge.aliases import MoveNote, current_version, move_alias
    from onnxforge.consumer import pull
    from onnxforge.errors import IntegrityError
    from onnxforge.tracking import client

    try:
        name = _unique("embedded")
        version = _register(mlflow_store, name, 61, tmp_path)
        mlflow_client = client(mlflow_store)
        assert current_version(mlflow_client, name, "champion") is None
        move_alias(mlflow_client, name, "champion", version, MoveNote("first", "tester"))
        manifest = pull(mlflow_store, name, tmp_path / "out", None)
        assert sha256_of(tmp_path / "out" / "model.onnx") == manifest["sha256"]
        mlflow_client.set_model_version_tag(name, version, "sha256", "0" * 64)
        with pytest.raises(IntegrityError, match="expected 0000"):
            pull(mlflow_store, name, tmp_path / "out2", None)
        assert not (tmp_path / "out2").exists()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


# ---------------------------------------------------------------- current_version fails closed


def test_current_version_is_none_only_for_missing_model_or_alias(
    server: MlflowServer, tmp_path: Path
) -> None:
    from onnxforge.aliases import current_version
    from onnxforge.tracking import client

    mlflow_client = client(server.uri)
    name = _unique("current")
    assert current_version(mlflow_client, name, "champion") is None  # no such model
    version = _register(server.uri, name, 51, tmp_path)
    assert current_version(mlflow_client, name, "champion") is None  # no such alias
    mlflow_client.set_registered_model_alias(name, "champion", version)
    assert str(current_version(mlflow_client, name, "champion").version) == version


class _Failing(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status and body the test set on the class."""

    status = 500
    body = b"Internal Server Error"

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"Internal Server Error"),
        (500, b'{"error_code": "INTERNAL_ERROR", "message": "database is locked"}'),
        (503, b"<html>bad gateway</html>"),
        (403, b'{"error_code": "PERMISSION_DENIED", "message": "no read on models"}'),
    ],
)
def test_current_version_raises_when_the_server_fails(
    status: int, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from onnxforge.aliases import current_version

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    handler = type("Handler", (_Failing,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        failing = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        with pytest.raises(MlflowException):
            current_version(failing, "model", "champion")
    finally:
        server.shutdown()
        server.server_close()


def test_current_version_raises_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from onnxforge.aliases import current_version

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowException):
        current_version(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), "m", "champion")
