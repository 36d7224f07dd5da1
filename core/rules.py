"""The per-message rules: may this message be sent now, and if not, what becomes of it.

One pure function of what the database says of a message and the instant of the attempt, shared
by the cohort's batch sends and the per-client delivery's send, so both shapes judge the end
time, the window, pauses and cancellations alike. No I/O and no clock: tested on its own.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.contracts.shared import SendOutcome
from core.models import OPEN_MESSAGE_STATUSES, DispatchStatus, MessageStatus
from core.windows import SendWindow, is_open, next_send_instant

# A paused dispatch is looked at again after this long.
PAUSE_RECHECK = timedelta(minutes=1)


class Action(StrEnum):
    SEND = "send"
    SKIP = "skip"  # already final: nothing to do
    CANCEL = "cancel"  # ends cancelled
    OPT_OUT = "opt_out"  # ends opted_out: the client is on the stop list
    EXPIRE = "expire"  # ends expired
    UNRENDER = "unrender"  # ends unrendered: a personal text the client lacks a key for
    CAP = "cap"  # ends capped: the client had its messages for the frequency cap's period
    WAIT = "wait"  # not now: try again at `not_before`


@dataclass(frozen=True)
class MessageState:
    """What the rules need of a message, its client and its dispatch, as stored now."""

    status: str
    client_exists: bool
    timezone: str | None  # the client's zone; None when the client is gone
    dispatch_status: str
    start_at: datetime
    end_at: datetime
    window: SendWindow | None
    # On the stop list now: never sent to, whatever else holds.
    opted_out: bool = False
    # Why the text cannot be rendered for this client now (a key it lacks), if it cannot.
    unrendered: str | None = None
    # Why the frequency cap keeps it from its client now, if it does.
    capped: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with a message now. `reason`: for WAIT, what it waits for (a SendOutcome:
    paused or outside_window, see `waits_for`); otherwise why, in words, kept as its error."""

    action: Action
    reason: str = ""
    not_before: datetime | None = None

    @property
    def waits_for(self) -> SendOutcome:
        """What a WAIT waits for: the dispatch's resume, or the client's window."""
        return SendOutcome(self.reason)


def decide(state: MessageState, *, now: datetime) -> Decision:
    """Send, or why not: final already, cancelled, opted out, past the end time, paused, outside the
    client's window (with its next opening), or never inside it again before the end time."""
    if state.status not in OPEN_MESSAGE_STATUSES:
        return Decision(Action.SKIP, f"already {state.status}")
    if not state.client_exists or state.timezone is None:
        return Decision(Action.CANCEL, "client deleted")
    if state.opted_out:
        return Decision(Action.OPT_OUT, "client opted out")
    if state.dispatch_status == DispatchStatus.CANCELLED:
        return Decision(Action.CANCEL, "dispatch cancelled")
    if now >= state.end_at:
        return Decision(Action.EXPIRE, "end time passed")
    if state.dispatch_status == DispatchStatus.PAUSED:
        return Decision(Action.WAIT, SendOutcome.PAUSED, now + PAUSE_RECHECK)
    if now >= state.start_at and is_open(at=now, window=state.window, timezone=state.timezone):
        # Judged only when it would go: an attribute set before the window opens still counts.
        if state.unrendered is not None:
            return Decision(Action.UNRENDER, state.unrendered)
        if state.capped is not None:
            return Decision(Action.CAP, state.capped)
        return Decision(Action.SEND)
    opens = next_send_instant(
        now=now,
        start_at=state.start_at,
        end_at=state.end_at,
        window=state.window,
        timezone=state.timezone,
    )
    if opens is None:
        return Decision(Action.EXPIRE, "window does not open before end time")
    return Decision(Action.WAIT, SendOutcome.OUTSIDE_WINDOW, opens)


FINAL_STATUS_OF = {
    Action.CANCEL: MessageStatus.CANCELLED,
    Action.OPT_OUT: MessageStatus.OPTED_OUT,
    Action.EXPIRE: MessageStatus.EXPIRED,
    Action.UNRENDER: MessageStatus.UNRENDERED,
    Action.CAP: MessageStatus.CAPPED,
}
