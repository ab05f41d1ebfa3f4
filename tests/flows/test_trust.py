"""Promotion a team can trust, tested against a real `mlflow server` and a real Prefect server
(the test harness): concurrent runs, an MLflow fault during the champion lookup, a crash between
version creation and alias moves, and garbage that must never become champion."""

from __future__ import annotations

import http.server
import os
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE, FAST, REPO

pytestmark = pytest.mark.slow


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(uri: str, name: str) -> dict[str, str]:
    model = _client(uri).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _versions(uri: str, name: str) -> dict[str, dict[str, str]]:
    found = _client(uri).search_model_versions(f"name='{name}'")
    return {str(v.version): dict(v.tags) for v in found}


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _cli_run(name: str, uri: str, home: Path, extra: dict[str, str] | None = None):
    """`onnxforge run` in its own process, against the shared servers."""
    sets = [f"{k}={v}" for k, v in {**FAST, "register.model_name": name, **(extra or {})}.items()]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PREFECT_API_URL": _api_url(),
        "ONNXFORGE_HOME": str(home),
    }
    command = [sys.executable, "-m", "flows.cli", "run", str(DEFAULT_RECIPE)]
    for pair in sets:
        command += ["--set", pair]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_runs_registering_at_once_end_with_one_champion(
    prefect_harness: None, mlflow_server, tmp_path: Path
) -> None:
    uri, name = mlflow_server.uri, "digits-race"
    # Different seeds, so two different files: the same file twice would re-confirm one version
    # (tests/flows/test_deployed.py) instead of racing for the champion alias.
    runs = [_cli_run(name, uri, tmp_path / f"home{i}", {"train.seed": str(i)}) for i in range(2)]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    versions = _versions(uri, name)
    assert len(versions) == 2
    aliases = _aliases(uri, name)
    assert aliases["champion"] == aliases["champion-cpu"]
    winner, loser = aliases["champion"], next(v for v in versions if v != aliases["champion"])
    assert versions[winner]["promotion"].startswith("champion moved: no champion yet")
    # The second run measured against "no champion"; by the time it held the lock, the first
    # had moved it, so its evidence was stale and it did not move champion.
    assert "this run's evidence is stale" in versions[loser]["promotion"]
    assert {v["onnxforge.state"] for v in versions.values()} == {"done"}


class _FailingAliasProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the real MLflow server, but answers 500 to champion look-ups."""

    upstream = ""

    def _forward(self) -> None:
        if "/registered-models/alias" in self.path:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error_code": "INTERNAL_ERROR", "message": "injected"}')
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        request = urllib.request.Request(
            self.upstream + self.path,
            data=body,
            method=self.command,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def failing_alias_proxy(mlflow_server) -> Iterator[str]:
    handler = type("Proxy", (_FailingAliasProxy,), {"upstream": mlflow_server.uri})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def test_faults_fail_closed_and_a_half_done_version_is_repaired(
    prefect_harness: None,
    mlflow_server,
    failing_alias_proxy: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.onnx_pipeline import onnx_pipeline
    from onnxforge.registration import register_versions
    from onnxforge.tracking import RunContext

    uri, name = mlflow_server.uri, "digits-faults"
    overrides = {**FAST, "register.model_name": name}
    monkeypatch.setenv("ONNXFORGE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first = onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides=overrides)
    assert first.champion_moved and _aliases(uri, name)["champion"] == first.version

    # 1. MLflow answers 500 to the champion look-up: the run fails, nothing is registered or moved.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", failing_alias_proxy)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception, match="injected|INTERNAL_ERROR|500"):
        onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides=overrides)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert list(_versions(uri, name)) == [first.version]
    assert _aliases(uri, name)["champion"] == first.version

    # 2. A run that died between creating its version and moving the aliases: the same core
    # call the register task makes, then nothing more (the process is gone).
    client = _client(uri)
    crashed = client.create_run(client.get_experiment_by_name("onnxforge-digits").experiment_id)
    client.set_terminated(crashed.info.run_id, "FAILED")
    context = RunContext(
        tracking_uri=uri,
        experiment_id=crashed.info.experiment_id,
        run_id=crashed.info.run_id,
        work_dir=str(tmp_path),
    )
    tags = {  # another file: the champion's own sha256 would re-confirm it, not add a version
        "variant": first.variant,
        "sha256": "0" * 64,
        "source_run_id": crashed.info.run_id,
    }
    half_done = register_versions(
        name, context, {first.variant: first.model_id}, {first.variant: tags}
    )[first.variant]
    assert _versions(uri, name)[half_done]["onnxforge.state"] == "pending"
    # ... and one that died after moving an alias, before marking itself done.
    other = client.create_run(crashed.info.experiment_id)
    client.set_terminated(other.info.run_id, "FAILED")
    moved_then_died = register_versions(
        name,
        context.model_copy(update={"run_id": other.info.run_id}),
        {first.variant: first.model_id},
        {first.variant: {**tags, "source_run_id": other.info.run_id}},
    )[first.variant]
    client.set_registered_model_alias(name, "canary", moved_then_died)

    third = onnx_pipeline(recipe_path=str(DEFAULT_RECIPE), overrides=overrides)
    repaired = _versions(uri, name)[half_done]
    assert repaired["onnxforge.state"] == "incomplete"
    assert repaired["promotion"].startswith(f"incomplete: run {crashed.info.run_id} stopped")
    assert half_done not in _aliases(uri, name).values()
    finished = _versions(uri, name)[moved_then_died]
    assert finished["onnxforge.state"] == "done"
    assert finished["promotion"].startswith(f"finished by run {third_run_id(uri, name)}")
    # The third run measured itself against the champion it fetched and verified, in its rounds.
    assert f"champion v{first.version}" in third.reason, third.reason


def third_run_id(uri: str, name: str) -> str:
    """The newest MLflow run of the model's experiment: the run that did the repair (it may
    have registered nothing new, re-confirming the champion's identical file)."""
    client = _client(uri)
    any_version = next(iter(_versions(uri, name).values()))
    experiment = client.get_run(any_version["source_run_id"]).info.experiment_id
    (newest,) = client.search_runs(
        [experiment], order_by=["attributes.start_time DESC"], max_results=1
    )
    return newest.info.run_id


def test_the_registry_lock_admits_one_run_at_a_time(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client

    from tasks.register import lock_name, registry_lock

    spans: list[tuple[float, float]] = []

    def hold() -> None:
        with registry_lock("digits-lock", timeout_s=60):
            entered = time.monotonic()
            time.sleep(1.5)
            spans.append((entered, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    first, second = sorted(spans)
    assert second[0] >= first[1]  # the second entered only after the first left
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(lock_name("digits-lock")).limit == 1


def test_the_highest_learning_rate_allowed_never_becomes_champion(
    prefect_harness: None, mlflow_store: str
) -> None:
    """learning_rate 1e6 is refused before work (tests/unit/test_trust_boundary.py); 10, the
    schema's bound, still trains garbage, and garbage never becomes champion."""
    from flows.onnx_pipeline import onnx_pipeline

    name = "digits-garbage"
    registration = onnx_pipeline(
        recipe_path=str(DEFAULT_RECIPE),
        overrides={**FAST, "register.model_name": name, "train.learning_rate": "10"},
    )
    assert not registration.champion_moved
    client = _client(mlflow_store)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")
    if registration.version is not None:  # registered as challenger, with the floor's reason
        tags = _versions(mlflow_store, name)[registration.version]
        assert tags["floors"] != "passed" and "below a quality floor" in tags["promotion"]


def test_a_model_that_learned_nothing_is_challenger_with_the_floor_as_reason(
    prefect_harness: None, mlflow_store: str
) -> None:
    """Finite, varying outputs (parity passes) but chance accuracy: only the floor stops it."""
    from flows.onnx_pipeline import onnx_pipeline

    name = "digits-untrained"
    registration = onnx_pipeline(
        recipe_path=str(DEFAULT_RECIPE),
        overrides={
            **FAST,
            "register.model_name": name,
            "train.epochs": "1",
            "train.learning_rate": "1e-9",
        },
    )
    assert registration.version is not None and not registration.champion_moved
    assert "not significantly better than always predicting class" in registration.reason
    tags = _versions(mlflow_store, name)[registration.version]
    assert "binomial p=" in tags["floors"]
    assert _aliases(mlflow_store, name) == {"challenger": registration.version}
