"""deployments/smoke_stack.sh, as a user runs it: the team stack in a temporary folder, two
process workers (pools cpu-a and cpu-b), the default recipe with its CPU benchmark on cpu-b, and
a check that the registered version's CPU rows were measured by the cpu-b worker."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.flows.test_server_auth import _env
from tests.flows.test_stack import PG_BIN, _processes_under

pytestmark = pytest.mark.slow


def test_the_smoke_script_passes_and_leaves_nothing_running(tmp_path: Path) -> None:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not installed here ({PG_BIN}/initdb is missing)")
    env = _env(tmp_path)
    env.pop("STATE")
    # A session of its own: on a timeout, TERM reaches the script (which then stops what it
    # started), not just bash.
    script = subprocess.Popen(
        ["bash", str(REPO / "deployments" / "smoke_stack.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGTERM)
        stdout, stderr = script.communicate(timeout=300)
        raise AssertionError(f"smoke_stack.sh took over 1500 s:\n{stdout[-3000:]}") from None
    result = subprocess.CompletedProcess(script.args, script.returncode, stdout, stderr)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("smoke_stack: PASS: "), output[-4000:]
    assert "measured by worker smoke-cpu-b of pool cpu-b" in last
    # Its temporary folder is gone, and so is every process that ran in it.
    first = result.stdout.splitlines()[0]  # "smoke_stack: stack in <folder>/servers (...)"
    folder = Path(first.split(" stack in ")[1].split()[0]).parent
    assert folder.name.startswith("onnxforge-smoke."), first
    assert not folder.exists()
    assert not _processes_under(folder)
