"""Optional human approval: the flow pauses with a typed form in the Prefect UI.

Called from the flow body (Prefect pauses flow runs, not task runs). Approve lets the proposed
champion moves go ahead (still subject to the locked re-check); reject or a timeout keeps every
champion alias where it is, and the candidate becomes challenger only.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from onnxforge.records import AliasDecision


class ApprovalInput(RunInput):
    """The form shown in the Prefect UI when a run waits for approval."""

    approve: bool = Field(False, description="Move the champion aliases as proposed")
    note: str = Field("", description="Why (recorded on the model version)")


def _form_text(decisions: list[AliasDecision]) -> str:
    lines = ["### onnxforge: approve the proposed alias moves?", ""]
    lines += [
        f"- **{d.alias}** -> {d.variant or '-'}: {'MOVE' if d.move else 'stays'} ({d.reason})"
        for d in decisions
    ]
    return "\n".join(lines)


def await_approval(decisions: list[AliasDecision], timeout_s: int) -> list[AliasDecision]:
    """Pause until someone approves or rejects; the answer is folded into each decision."""
    logger = get_run_logger()
    if not any(d.move for d in decisions if d.alias != "challenger"):
        logger.info("no champion alias would move: no approval needed")
        return decisions
    form = ApprovalInput.with_initial_data(description=_form_text(decisions), approve=False)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, key="onnxforge-approval")
    except FlowPauseTimeout:
        verdict, approved = f"approval timed out after {timeout_s} s", False
    else:
        approved = answer.approve
        verdict = f"{'approved' if approved else 'rejected'}" + (
            f": {answer.note}" if answer.note else ""
        )
    logger.info("approval: %s", verdict)
    return [_apply(d, approved, verdict) for d in decisions]


def _apply(decision: AliasDecision, approved: bool, verdict: str) -> AliasDecision:
    if decision.alias == "challenger" or not decision.move:
        return decision
    if approved:
        return decision.model_copy(update={"reason": f"{decision.reason}; {verdict}"})
    return decision.model_copy(
        update={"move": False, "reason": f"{verdict} (proposed: {decision.reason})"}
    )
