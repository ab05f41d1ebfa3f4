"""Optional human approval: the flow pauses with a typed form in the Prefect UI.

Called from the flow body (Prefect pauses flow runs, not task runs). Approve lets the proposed
champion moves go ahead (still subject to the locked re-check); reject or a timeout keeps every
champion alias where it is, and the candidate becomes challenger only. An answer whose note
says the opposite of the toggle ("approved" with approve off) is not recorded: the run pauses
again, saying why, within the same timeout.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Literal

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


def _form_text(decisions: list[AliasDecision], asked_again: str | None = None) -> str:
    lines = ["### onnxforge: approve the proposed alias moves?", ""]
    if asked_again:
        lines += [f"**Asked again:** {asked_again}.", ""]
    lines += [
        f"- **{d.alias}** -> {d.variant or '-'}: {'MOVE' if d.move else 'stays'} ({d.reason})"
        for d in decisions
    ]
    return "\n".join(lines)


# A note "reads as" approval or rejection by its first word or two, e.g. "approved", "LGTM!",
# "looks good, no regressions" / "no", "not tonight", "do not ship". Other notes are reasons.
_APPROVING = {
    "approve", "approved", "ok", "okay", "yes", "yep", "yeah", "lgtm", "sgtm", "accept",
    "accepted", "ship", "go", "+1", "\N{THUMBS UP SIGN}", "looks good", "good to", "not bad",
    "no regressions", "no issues", "no objections", "no concerns", "no problem",
}  # fmt: skip
_REJECTING = {
    "reject", "rejected", "no", "nope", "nah", "deny", "denied", "decline", "declined",
    "not", "don't", "dont", "do not", "stop", "hold", "wait", "veto", "never", "-1",
    "\N{THUMBS DOWN SIGN}", "looks bad",
}  # fmt: skip
_WORD = re.compile(r"[+-]1|[\w']+|\N{THUMBS UP SIGN}|\N{THUMBS DOWN SIGN}")


def note_reading(note: str) -> Literal["approve", "reject"] | None:
    """What a note says by itself: approve, reject, or nothing either way (a plain reason)."""
    words = _WORD.findall(note.lower().replace("\N{RIGHT SINGLE QUOTATION MARK}", "'"))
    for lead in (" ".join(words[:2]), " ".join(words[:1])):
        if lead in _APPROVING:
            return "approve"
        if lead in _REJECTING:
            return "reject"
    return None


def contradiction(approve: bool, note: str) -> str | None:
    """Why an answer cannot be recorded as given (its note says the opposite), or None."""
    reading, shown = note_reading(note), note.strip()[:80]
    if reading == "approve" and not approve:
        return (
            f'the note "{shown}" reads as approval, but approve was off. To approve, switch '
            "approve on; to reject, say so in the note or leave it empty"
        )
    if reading == "reject" and approve:
        return (
            f'the note "{shown}" reads as a rejection, but approve was on. To reject, switch '
            "approve off; to approve, change the note"
        )
    return None


def await_approval(decisions: list[AliasDecision], timeout_s: int) -> list[AliasDecision]:
    """Pause until someone approves or rejects; the answer is folded into each decision.

    An answer that contradicts itself pauses the run again (a new form saying why) until a
    consistent answer comes or `timeout_s`, counted from the first pause, runs out.
    """
    logger = get_run_logger()
    if not any(d.move for d in decisions if d.alias != "challenger"):
        logger.info("no champion alias would move: no approval needed")
        return decisions
    deadline, asked_again, note = time.monotonic() + timeout_s, None, ""
    for ask in itertools.count(1):
        remaining = int(deadline - time.monotonic())
        if remaining < 1:
            verdict, approved = _timed_out(timeout_s, asked_again), False
            break
        form = ApprovalInput.with_initial_data(
            description=_form_text(decisions, asked_again), approve=False, note=note
        )
        key = "onnxforge-approval" if ask == 1 else f"onnxforge-approval-{ask}"
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=remaining, key=key)
        except FlowPauseTimeout:
            verdict, approved = _timed_out(timeout_s, asked_again), False
            break
        asked_again, note = contradiction(answer.approve, answer.note), answer.note
        if asked_again is None:
            approved = answer.approve
            verdict = f"{'approved' if approved else 'rejected'}" + (
                f": {answer.note}" if answer.note else ""
            )
            break
        logger.warning("approval answer not recorded: %s; asking again", asked_again)
    logger.info("approval: %s", verdict)
    return [_apply(d, approved, verdict) for d in decisions]


def _timed_out(timeout_s: int, asked_again: str | None) -> str:
    verdict = f"approval timed out after {timeout_s} s"
    return (
        f"{verdict} (the last answer was not recorded: {asked_again})" if asked_again else verdict
    )


def _apply(decision: AliasDecision, approved: bool, verdict: str) -> AliasDecision:
    if decision.alias == "challenger" or not decision.move:
        return decision
    if approved:
        return decision.model_copy(update={"reason": f"{decision.reason}; {verdict}"})
    return decision.model_copy(
        update={"move": False, "reason": f"{verdict} (proposed: {decision.reason})"}
    )
