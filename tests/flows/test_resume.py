"""Resume: a run that failed at register (MLflow unreachable) is run again and does not retrain,
re-export or rebuild variants; `--no-cache` does. Real `mlflow server`, real Prefect server (the
test harness), `onnxforge run` in its own process; asserted on Prefect's task-run states."""

from __future__ import annotations

import http.server
import os
import re
import socketserver
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE, FAST, REPO

pytestmark = pytest.mark.slow

BUILT = ("train", "export", "make-simplified", "make-int8-dynamic")
REGISTRY_WRITES = ("/registered-models/create", "/model-versions/create")


class _OutageProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the real MLflow server until the first registry write; from then on (while
    `outage` is armed) every request gets 503, as if the server had gone away."""

    upstream = ""
    state: dict[str, bool] = {}

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        if self.state["armed"] and any(w in self.path for w in REGISTRY_WRITES):
            self.state["down"] = True
        if self.state["down"]:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {
            k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")
        }
        request = urllib.request.Request(
            self.upstream + self.path, data=body, method=self.command, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                status, payload, kind = (
                    answer.status,
                    answer.read(),
                    answer.headers.get("Content-Type"),
                )
        except urllib.error.HTTPError as error:
            status, payload, kind = error.code, error.read(), error.headers.get("Content-Type")
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def outage_proxy(mlflow_server) -> Iterator[tuple[str, dict[str, bool]]]:
    state = {"armed": True, "down": False}
    handler = type("Proxy", (_OutageProxy,), {"upstream": mlflow_server.uri, "state": state})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}", state
        server.shutdown()


def _cli_run(name: str, uri: str, home: Path, *flags: str) -> subprocess.CompletedProcess:
    """`onnxforge run` in its own process, against the harness's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "ONNXFORGE_HOME": str(home),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # the outage is MLflow's; fail each call at once
        "ONNXFORGE_MLFLOW_RETRY_DELAYS": "1",  # one Prefect retry, a second later
    }
    command = [sys.executable, "-m", "flows.cli", "run", str(DEFAULT_RECIPE), *flags]
    for key, value in {**FAST, "register.model_name": name}.items():
        command += ["--set", f"{key}={value}"]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def _task_states(name: str) -> list[dict[str, str]]:
    """For each flow run of model `name`, oldest first: task-run name -> state name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = [
            run
            for run in client.read_flow_runs(sort=FlowRunSort.START_TIME_ASC, limit=200)
            if (run.parameters.get("overrides") or {}).get("register.model_name") == name
        ]
        states = []
        for run in runs:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            # Prefect names a task run "<task name>-<3 hex digits>" unless it sets its own name
            states.append({re.sub(r"-[0-9a-f]{3}$", "", t.name): t.state.name for t in tasks})
    return states


def test_a_run_that_failed_at_register_resumes_without_retraining(
    prefect_harness: None, mlflow_server, outage_proxy, tmp_path: Path
) -> None:
    import mlflow

    proxy_uri, outage = outage_proxy
    name = "digits-resume"
    # --no-cache: other tests in the session may have stored the same training already
    failed = _cli_run(name, proxy_uri, tmp_path / "home", "--no-cache")
    assert failed.returncode != 0, failed.stdout[-3000:] + failed.stderr[-3000:]
    first = _task_states(name)[0]
    assert all(first[task] == "Completed" for task in BUILT), first
    assert first["register"] == "Failed", first

    outage.update(armed=False, down=False)  # MLflow is back
    resumed = _cli_run(name, proxy_uri, tmp_path / "home")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    second = _task_states(name)[1]
    assert all(second[task] == "Cached" for task in BUILT), second
    assert second["register"] == second["promote"] == "Completed", second
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.description  # the run summary, written when the aliases moved
    run = client.get_run(champion.tags["source_run_id"])
    # the reused training's numbers reached the new run
    assert run.data.metrics["train.reused"] == 1.0
    assert len(client.get_metric_history(run.info.run_id, "train.loss")) == 8
    assert run.inputs.dataset_inputs[0].dataset.digest  # the data file's sha256 (cut to 36)

    fresh = _cli_run(name, mlflow_server.uri, tmp_path / "home", "--no-cache")
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    third = _task_states(name)[2]
    assert all(third[task] == "Completed" for task in BUILT), third


def test_a_stored_result_whose_file_changed_is_rebuilt_not_reused(
    prefect_harness: None, tmp_path: Path
) -> None:
    import uuid

    from prefect import flow, task

    from onnxforge.onnx_files import sha256_of
    from onnxforge.records import ModelArtifact
    from tasks.cache import CACHED, verified_key

    key = f"test-{uuid.uuid4().hex}"
    path = tmp_path / "m.onnx"

    @task(name="make-file", cache_key_fn=verified_key(lambda _: key), **CACHED)
    def make_file(content: str) -> ModelArtifact:
        path.write_text(content)
        return ModelArtifact(
            path=str(path),
            sha256=sha256_of(path),
            variant="fp32",
            parent=None,
            producer=content,
            opset=17,
            size_bytes=len(content),
        )

    @flow
    def build(content: str) -> tuple[str, str]:
        state = make_file(content, return_state=True)
        return state.name, state.result().producer

    assert build("one") == ("Completed", "one")
    assert build("two") == ("Cached", "one")  # same key: the stored result
    path.write_text("changed by hand")
    assert build("three") == ("Completed", "three")  # its file changed: made again
    assert build("four") == ("Cached", "three")
    path.unlink()
    assert build("five") == ("Completed", "five")
