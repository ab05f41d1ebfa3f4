"""The base job template deployments/deploy.py gives a process work pool, read by Prefect's own
code (no server): the server's job-variable check refuses every job variable, and a worker that
gets one anyway (a plain flow run's job variables are not checked) builds the same configuration
as without it: no command, no environment of the run's choosing, a temporary folder."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest

from deployments.deploy import LOCKED_TEMPLATE, open_job_variables

HOSTILE = {
    "command": "touch /tmp/onnxforge-marker",
    "env": {"ONNXFORGE_TRUSTED_OVERRIDES": "1", "ONNXFORGE_IMPORT_MODULES": "posix"},
    "env.PYTHONPATH": "/tmp/hostile",
    "working_dir": "/tmp/hostile",
}


def _worker_configuration(template: dict, values: dict):
    from prefect.workers.process import ProcessJobConfiguration

    build = ProcessJobConfiguration.from_template_and_values(
        template,
        values,
        client=mock.Mock(),  # no block or variable references to resolve
    )
    return asyncio.run(build)


def _default_template() -> dict:
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def test_prefects_default_template_passes_a_runs_command_and_environment() -> None:
    # What the lock is for: with the default template the worker takes all of it.
    opened = _worker_configuration(_default_template(), HOSTILE)
    assert opened.command == HOSTILE["command"]
    assert opened.env["ONNXFORGE_TRUSTED_OVERRIDES"] == "1"
    assert opened.env["PYTHONPATH"] == "/tmp/hostile"
    assert str(opened.working_dir) == "/tmp/hostile"
    assert open_job_variables(_default_template()) == [
        "command",
        "env",
        "labels",
        "name",
        "stream_output",
        "working_dir",
    ]


def test_a_locked_pools_worker_ignores_every_job_variable() -> None:
    locked = _worker_configuration(LOCKED_TEMPLATE, HOSTILE)
    plain = _worker_configuration(LOCKED_TEMPLATE, {})
    assert locked.model_dump() == plain.model_dump()
    assert locked.command is None  # the worker starts Prefect's engine itself
    assert locked.env == {}  # the flow run gets the worker's environment, nothing added
    assert locked.working_dir is None  # a fresh temporary folder
    assert open_job_variables(LOCKED_TEMPLATE) == []


@pytest.mark.parametrize("variables", [{"command": "x"}, {"env": {"A": "1"}}, {"name": "x"}])
def test_the_server_check_refuses_any_job_variable_on_a_locked_pool(variables: dict) -> None:
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = LOCKED_TEMPLATE["variables"]
    # As prefect/server/api/validation.py calls it for a deployment's flow run.
    check = {"raise_on_error": True, "preprocess": True, "allow_none_with_default": True}
    validate({}, schema, **check)
    with pytest.raises(ValidationError, match="Additional properties are not allowed"):
        validate(variables, schema, **check)


def test_a_fixed_env_mapping_counts_as_open() -> None:
    # A worker merges a run's `env` into a fixed mapping (BaseJobConfiguration).
    template = {"job_configuration": {"env": {"OMP_NUM_THREADS": "1"}}, "variables": {}}
    assert open_job_variables(template) == ["env"]
    assert _worker_configuration(template, {"env": {"A": "1"}}).env == {
        "OMP_NUM_THREADS": "1",
        "A": "1",
    }
