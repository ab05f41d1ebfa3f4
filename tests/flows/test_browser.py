"""End to end in a real browser: server mode with authentication (deployments/start_servers.sh),
the deployments served (deployments/serve.py), and Debian's Chromium driven by Playwright through
the Prefect UI: log in, open the transformer's custom run form, pick the recipe from the list,
enter numeric overrides, submit, and see the run complete with its artifacts on the flow run.

Screenshots land in the test's temp folder and in test-artifacts/browser/ (ignored by git).
Needs /usr/bin/chromium (`make install` installs it); nothing beyond localhost.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.servers import free_port, read_credentials

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEPLOYMENT = "text_transformer-nightly"
RECIPE = "configs/text_transformer.yaml"
# One epoch, one variant, one provider and batch size, short rounds: the UI is under test here.
OVERRIDES = {
    "train.epochs": 1,
    "variants": "{int8-dynamic: {}}",
    "benchmark.providers": ["CPUExecutionProvider"],
    "benchmark.batch_sizes": [1],
    "register.objective.batch_size": 1,
    "benchmark.warmup": 2,
    "benchmark.iterations": 10,
    "benchmark.rounds": 3,
    "benchmark.baseline": False,
}
RUN_TIMEOUT_S = 480
ARTIFACT_KEYS = ("onnxforge-summary", "onnxforge-benchmark", "onnxforge-mlflow-run")


@dataclass(frozen=True)
class ServerMode:
    ui: str  # the Prefect UI's origin
    auth_string: str
    env: dict[str, str]  # what a client of both servers needs


def _api(mode: ServerMode, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{mode.ui}/api{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={
            "Authorization": "Basic " + base64.b64encode(mode.auth_string.encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wait_for_deployment(mode: ServerMode, serve: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError(f"serve.py exited:\n{log.read_text()[-3000:]}")
        found = _api(mode, "/deployments/filter", {"deployments": {"name": {"any_": [DEPLOYMENT]}}})
        if found:
            return
        time.sleep(2)
    raise RuntimeError(f"{DEPLOYMENT} not registered after 180 s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerMode]:
    """Both servers with authentication, and serve.py serving every deployment."""
    state = tmp_path / "servers"
    prefect_port, mlflow_port = free_port(), free_port()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "ONNXFORGE_"))
    }
    server_env = {
        **base_env,
        "STATE": str(state),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
    }
    stop = ["bash", str(REPO / "deployments" / "stop_servers.sh")]
    serve = None
    try:
        subprocess.run(
            ["bash", str(REPO / "deployments" / "start_servers.sh")],
            env=server_env,
            check=True,
            timeout=240,
        )
        credentials = read_credentials(state / "credentials.env")
        ui = f"http://127.0.0.1:{prefect_port}"
        client_env = {
            **base_env,
            **credentials,
            "PREFECT_API_URL": f"{ui}/api",
            "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "ONNXFORGE_HOME": str(tmp_path / "onnxforge"),
            # The short run below measures batch 1 only, so its objective moves to batch 1: a
            # change of the promotion bar, which the operator of these servers opts into.
            "ONNXFORGE_TRUSTED_BAR": "1",
        }
        mode = ServerMode(ui, credentials["PREFECT_API_AUTH_STRING"], client_env)
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            serve = subprocess.Popen(
                [sys.executable, str(REPO / "deployments" / "serve.py")],
                cwd=REPO,
                env=client_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its flow-run subprocesses stop with it
            )
        _wait_for_deployment(mode, serve, log)
        yield mode
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(timeout=30)
        subprocess.run(stop, env=server_env, timeout=60)


def _wait_for_final_state(mode: ServerMode, flow_run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = _api(mode, f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(5)
    raise AssertionError(f"flow run {flow_run_id} not finished after {RUN_TIMEOUT_S} s")


def test_run_the_transformer_from_the_ui_and_see_its_artifacts(
    served: ServerMode, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: `make install` installs Chromium"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            flow_run_id = _submit_custom_run(page, served, shots)
            run = _wait_for_final_state(served, flow_run_id)
            _look_at_the_finished_run(page, served, flow_run_id, shots)
            browser.close()
    finally:
        published = REPO / "test-artifacts" / "browser"
        shutil.rmtree(published, ignore_errors=True)
        shutil.copytree(shots, published)

    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"]["recipe_path"] == RECIPE
    assert run["parameters"]["overrides"]["train.epochs"] == 1  # a number, not "1"
    message = run["state"]["message"] or ""
    assert message.startswith(("text-transformer v", "nothing registered: ")), message
    assert run["name"].startswith("text_transformer-")  # run names say recipe and date


def _submit_custom_run(page, mode: ServerMode, shots: Path) -> str:
    """Log in, open the deployment's custom run form, fill it in and submit; the flow run id."""
    from playwright.sync_api import expect

    page.goto(f"{mode.ui}/login")
    page.get_by_placeholder("admin:pass").fill(mode.auth_string)
    page.screenshot(path=shots / "01-login.png")
    page.get_by_role("button", name="Login").click()
    page.wait_for_url("**/dashboard*")
    page.goto(f"{mode.ui}/deployments")  # a fresh page: no toast left from before the login
    page.get_by_role("link", name=DEPLOYMENT).click()
    expect(page.get_by_text("Concurrency Limit")).to_be_visible()
    page.screenshot(path=shots / "02-deployment.png")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()

    recipe = page.locator("button.p-select-button__control", has_text="configs/")
    recipe.focus()
    page.keyboard.press("ArrowDown")  # opens the list (a mouse click toggles it shut again)
    options = page.get_by_role("option")
    expect(options).to_have_count(len(list((REPO / "configs").glob("*.yaml"))))
    page.screenshot(path=shots / "03-recipe-list.png")
    page.get_by_role("option", name=RECIPE).click()
    expect(recipe).to_have_text(RECIPE)

    page.get_by_role("button", name="dict", exact=True).click()
    overrides = page.locator(".schema-form-property-kind-json textarea")
    expect(overrides).to_have_count(1)
    overrides.fill(json.dumps(OVERRIDES, indent=2))
    page.screenshot(path=shots / "04-form.png", full_page=True)
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(lambda url: "/deployments/deployment/" in url and "/run" not in url)
    page.screenshot(path=shots / "05-submitted.png")
    return _submitted_run_id(mode)


def _submitted_run_id(mode: ServerMode) -> str:
    """The deployment's run that carries overrides (the scheduled ones have none)."""
    body = {"deployments": {"name": {"any_": [DEPLOYMENT]}}, "limit": 50}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [
            r for r in _api(mode, "/flow_runs/filter", body) if r["parameters"].get("overrides")
        ]
        if runs:
            (run,) = runs
            return run["id"]
        time.sleep(1)
    raise AssertionError("the submitted run did not appear")


def _look_at_the_finished_run(page, mode: ServerMode, flow_run_id: str, shots: Path) -> None:
    """The flow run's page shows its final state; its Artifacts tab lists the run's artifacts."""
    from playwright.sync_api import expect

    page.goto(f"{mode.ui}/runs/flow-run/{flow_run_id}")
    expect(page.get_by_text("Completed").first).to_be_visible()
    page.screenshot(path=shots / "06-completed.png", full_page=True)
    page.get_by_role("listitem").filter(has_text="Artifacts").first.click()  # the tab
    for key in ARTIFACT_KEYS:
        expect(page.get_by_text(key).first).to_be_visible()
    page.screenshot(path=shots / "07-artifacts.png", full_page=True)
