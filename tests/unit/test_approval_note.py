"""How an approval answer's note is read: a note that says the opposite of the toggle is not
recorded (tasks/approval.py asks again); any other note is a reason, recorded as given."""

from __future__ import annotations

import pytest

from onnxforge.records import AliasDecision
from tasks.approval import _form_text, _timed_out, contradiction, note_reading


@pytest.mark.parametrize(
    "note",
    ["approved", "Approved.", "ok", "OK!", "yes", "LGTM", "lgtm, ship it", "+1", "\N{THUMBS UP SIGN}",
     "looks good", "Looks good, no regressions", "no regressions", "go ahead", "ship it"],
)  # fmt: skip
def test_a_note_that_says_yes_reads_as_approval(note: str) -> None:
    assert note_reading(note) == "approve"


@pytest.mark.parametrize(
    "note",
    ["rejected", "no", "No.", "nope", "not tonight", "do not ship", "don\N{RIGHT SINGLE QUOTATION MARK}t",
     "-1", "\N{THUMBS DOWN SIGN}", "hold: p99 regressed", "wait for the fix"],
)  # fmt: skip
def test_a_note_that_says_no_reads_as_rejection(note: str) -> None:
    assert note_reading(note) == "reject"


@pytest.mark.parametrize(
    "note", ["", "   ", "p99 within noise", "the int8 variant is 3x smaller", "nothing to add"]
)
def test_a_reason_reads_as_neither(note: str) -> None:
    assert note_reading(note) is None


def test_approved_with_the_toggle_off_is_a_contradiction_that_says_how_to_answer() -> None:
    assert contradiction(False, "approved") == (
        'the note "approved" reads as approval, but approve was off. To approve, switch '
        "approve on; to reject, say so in the note or leave it empty"
    )


def test_a_rejection_with_the_toggle_on_is_a_contradiction() -> None:
    reason = contradiction(True, "not tonight")
    assert reason is not None
    assert reason.startswith('the note "not tonight" reads as a rejection, but approve was on')


@pytest.mark.parametrize(
    ("approve", "note"),
    [(True, "approved"), (True, "looks good"), (False, "not tonight"), (False, "rejected"),
     (True, ""), (False, ""), (True, "p99 within noise"), (False, "p99 within noise")],
)  # fmt: skip
def test_consistent_answers_are_recorded_as_given(approve: bool, note: str) -> None:
    assert contradiction(approve, note) is None


def test_a_long_note_is_shortened_in_the_message() -> None:
    reason = contradiction(False, "ok " + "x" * 500)
    assert reason is not None and len(reason) < 250


def test_the_form_asked_again_says_why_first() -> None:
    decision = AliasDecision(
        alias="champion",
        provider="CPUExecutionProvider",
        variant="int8-dynamic",
        move=True,
        reason="faster",
    )
    text = _form_text([decision], asked_again=contradiction(False, "approved"))
    assert text.splitlines()[2].startswith('**Asked again:** the note "approved" reads as approval')
    assert "- **champion** -> int8-dynamic: MOVE (faster)" in text


def test_a_timeout_after_an_unrecorded_answer_says_so() -> None:
    reason = contradiction(False, "approved")
    assert _timed_out(600, None) == "approval timed out after 600 s"
    assert (
        _timed_out(600, reason)
        == f"approval timed out after 600 s (the last answer was not recorded: {reason})"
    )
