"""The per-message rules, without a database: every way a message is kept from sending."""

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from core.models import DispatchStatus, MessageStatus
from core.rules import FINAL_STATUS_OF, PAUSE_RECHECK, Action, MessageState, decide
from core.windows import SendWindow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 15:00 in Moscow
OPEN = MessageState(
    status="pending",
    client_exists=True,
    timezone="Europe/Moscow",
    dispatch_status="running",
    start_at=NOW - timedelta(hours=1),
    end_at=NOW + timedelta(days=1),
    window=SendWindow(start=time(9, 0), end=time(21, 0)),
)


def test_open_message_inside_its_window_is_sent() -> None:
    assert decide(OPEN, now=NOW).action == Action.SEND
    assert decide(replace(OPEN, status="retrying"), now=NOW).action == Action.SEND
    assert decide(replace(OPEN, window=None), now=NOW).action == Action.SEND


@pytest.mark.parametrize("status", ["sent", "failed", "expired", "cancelled"])
def test_final_message_is_left_alone(status: str) -> None:
    decision = decide(replace(OPEN, status=status), now=NOW)
    assert decision.action == Action.SKIP


def test_deleted_client_and_cancelled_dispatch_cancel() -> None:
    gone = decide(replace(OPEN, client_exists=False, timezone=None), now=NOW)
    assert (gone.action, gone.reason) == (Action.CANCEL, "client deleted")
    cancelled = decide(replace(OPEN, dispatch_status="cancelled"), now=NOW)
    assert (cancelled.action, cancelled.reason) == (Action.CANCEL, "dispatch cancelled")


def test_end_time_wins_over_pause_and_window() -> None:
    past = replace(OPEN, end_at=NOW, dispatch_status="paused")
    assert decide(past, now=NOW).action == Action.EXPIRE
    assert decide(replace(OPEN, end_at=NOW - timedelta(seconds=1)), now=NOW).action == (
        Action.EXPIRE
    )


def test_paused_dispatch_waits_for_a_recheck() -> None:
    decision = decide(replace(OPEN, dispatch_status="paused"), now=NOW)
    assert (decision.action, decision.reason) == (Action.WAIT, "paused")
    assert decision.not_before == NOW + PAUSE_RECHECK


def test_outside_window_waits_for_the_clients_next_opening() -> None:
    tokyo = replace(OPEN, timezone="Asia/Tokyo")  # 21:00 in Tokyo: just closed
    decision = decide(tokyo, now=NOW)
    assert (decision.action, decision.reason) == (Action.WAIT, "outside_window")
    assert decision.not_before == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)  # 09:00 Tokyo


def test_before_start_waits_for_start() -> None:
    later = replace(OPEN, start_at=NOW + timedelta(hours=1))
    decision = decide(later, now=NOW)
    assert (decision.action, decision.not_before) == (Action.WAIT, NOW + timedelta(hours=1))


def test_window_that_never_opens_before_end_expires() -> None:
    short = replace(OPEN, timezone="Asia/Tokyo", end_at=NOW + timedelta(hours=6))
    decision = decide(short, now=NOW)
    assert (decision.action, decision.reason) == (
        Action.EXPIRE,
        "window does not open before end time",
    )


def test_opted_out_ends_the_message_before_anything_else_is_judged() -> None:
    state = MessageState(
        status=MessageStatus.PENDING,
        client_exists=True,
        timezone="Europe/Moscow",
        dispatch_status=DispatchStatus.PAUSED,
        start_at=NOW - timedelta(hours=1),
        end_at=NOW - timedelta(minutes=1),
        window=None,
        opted_out=True,
    )
    decision = decide(state, now=NOW)
    assert decision.action == Action.OPT_OUT
    assert FINAL_STATUS_OF[decision.action] == MessageStatus.OPTED_OUT
