"""Flow state hooks: the MLflow run ends the way the flow run ended.

Prefect calls a flow's hooks as hook(flow, flow_run, state) when the flow run enters that state
(on_failure only for the final failure: a flow run that will be retried is AwaitingRetry, and
the retry reopens the same MLflow run). A hook's own error is logged by Prefect, never raised.
A process killed with SIGKILL runs no hook at all: the next run's open-mlflow-run ends what it
left RUNNING (onnxforge.run_lifecycle.end_orphaned_runs).
"""

from __future__ import annotations

from typing import Any

from onnxforge.run_lifecycle import end_flow_run
from onnxforge.tracking import resolve_tracking_uri


def _end_with(status: str) -> Any:
    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        message = f"Prefect flow run {state.name}: {state.message or 'no message'}"
        end_flow_run(resolve_tracking_uri(), str(flow_run.id), status, message)

    hook.__name__ = f"end_mlflow_run_{status.lower()}"
    return hook


end_mlflow_run_failed = _end_with("FAILED")
end_mlflow_run_killed = _end_with("KILLED")

# @flow(..., **MLFLOW_RUN_HOOKS): a failed flow ends its run FAILED; a crashed or cancelled one KILLED.
MLFLOW_RUN_HOOKS: dict[str, list] = {
    "on_failure": [end_mlflow_run_failed],
    "on_crashed": [end_mlflow_run_killed],
    "on_cancellation": [end_mlflow_run_killed],
}
