"""The soak's checks on records made by hand: each one fails on what it is there to catch."""

from datetime import UTC, datetime, time

from core.windows import SendWindow
from soak.checks import (
    Acceptance,
    DispatchRow,
    MessageRow,
    counts_kept,
    each_once,
    every_message_final,
    inside_windows,
    nothing_lost,
    the_edit,
)
from soak.faults import FaultRecord

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC).timestamp()  # 09:00 in Moscow
# 09:00-10:00 in Moscow: 06:00-07:00 UTC.
DISPATCH = DispatchRow(
    1,
    "zones",
    "completed",
    datetime.fromtimestamp(T0 - 600, UTC),
    datetime.fromtimestamp(T0 + 7200, UTC),
    SendWindow(start=time(9, 0), end=time(10, 0)),
)
MOSCOW = "Europe/Moscow"


def accepted(msg_id: int, at: float, text: str = "t") -> Acceptance:
    return Acceptance(msg_id, arrived_at=at, accepted_at=at + 0.1, text=text)


def test_open_messages_and_unfinished_dispatches_fail() -> None:
    messages = [MessageRow(1, 1, "sent", MOSCOW), MessageRow(2, 1, "expired", MOSCOW)]
    assert every_message_final(messages, [DISPATCH]).ok
    assert not every_message_final([*messages, MessageRow(3, 1, "retrying", MOSCOW)], [DISPATCH]).ok
    running = DispatchRow(1, "zones", "running", DISPATCH.start_at, DISPATCH.end_at, None)
    assert not every_message_final(messages, [running]).ok


def test_a_send_unrecorded_or_a_record_unsent_is_a_loss() -> None:
    messages = [MessageRow(1, 1, "sent", MOSCOW), MessageRow(2, 1, "expired", MOSCOW)]
    assert nothing_lost(messages, [accepted(1, T0)], []).ok
    lost = nothing_lost(messages, [], [])
    assert not lost.ok and lost.detail["recorded_unsent"] == [1]
    taken = [accepted(1, T0), accepted(2, T0)]
    unrecorded = nothing_lost(messages, taken, [])
    assert not unrecorded.ok
    assert unrecorded.detail["unexplained"] == {"2": {"status": "expired", "at": T0 + 0.1}}
    # Taken while its worker died: in flight at the kill, its fate unknown to the service.
    at_a_kill = nothing_lost(messages, taken, [kill(1, T0 + 1)])
    assert at_a_kill.ok and at_a_kill.detail["in_flight_unrecorded"] == {"2": "expired"}
    # It counts toward the kill's bound with the duplicates.
    bounded = each_once(taken, [kill(1, T0 + 1)], send_concurrency=0, workers=3, unrecorded_ids=[2])
    assert not bounded.ok and bounded.detail["over_bound"] == {"1": 1}


def kill(index: int, at: float, kind: str = "worker_kill") -> FaultRecord:
    return FaultRecord(index, kind, "", started=at, ended=at + 2)


def test_duplicates_are_laid_at_a_kill_within_its_bound() -> None:
    log = [accepted(i, T0 - 1) for i in range(3)] + [accepted(i, T0 + 5) for i in range(3)]
    check = each_once(log, [kill(1, T0)], send_concurrency=3, workers=3)
    assert check.ok, check.figure
    assert check.detail["per_fault"]["1"] == {"kind": "worker_kill", "in_flight": 3, "bound": 3}
    # One more than a worker has in flight.
    more = [*log, accepted(3, T0 - 1), accepted(3, T0 + 5)]
    over = each_once(more, [kill(1, T0)], send_concurrency=3, workers=3)
    assert not over.ok and over.detail["over_bound"] == {"1": 4}
    # A restart of PostgreSQL strands every worker's sends.
    assert each_once(more, [kill(1, T0, "postgres_restart")], send_concurrency=3, workers=3).ok
    # Far from any kill, or next to a SIGTERM (which finishes its sends): unexplained.
    assert not each_once(log, [kill(1, T0 + 600)], send_concurrency=3, workers=3).ok
    assert not each_once(log, [kill(1, T0, "worker_term")], send_concurrency=3, workers=3).ok
    assert not each_once(log, [], send_concurrency=3, workers=3).ok


def test_arrivals_outside_the_window_or_after_the_end_fail() -> None:
    messages = [MessageRow(1, 1, "sent", MOSCOW), MessageRow(2, 1, "sent", "Asia/Omsk")]
    inside = [accepted(1, T0 + 60)]
    assert all(check.ok for check in inside_windows(messages, [DISPATCH], inside))
    # Judged at 09:59:59.5 and arrived a second later: the transit's tolerance.
    edge = [accepted(1, T0 + 3600 + 0.5)]
    assert all(check.ok for check in inside_windows(messages, [DISPATCH], edge))
    # Omsk is three hours east: 12:01 there, outside.
    window, end = inside_windows(messages, [DISPATCH], [accepted(2, T0 + 60)])
    assert not window.ok and end.ok
    late = DispatchRow(1, "zones", "completed", DISPATCH.start_at, DISPATCH.end_at, None)
    window, end = inside_windows(messages, [late], [accepted(1, T0 + 7200 + 3)])
    assert window.ok and not end.ok


def test_the_edit_needs_old_texts_before_and_new_ones_after() -> None:
    log = [accepted(1, T0 - 10, "old"), accepted(2, T0 + 10, "new")]
    edit = {"before_text": "old", "after_text": "new", "edit_sent": T0, "edit_answered": T0 + 1}
    assert the_edit(log, [1, 2], **edit).ok  # type: ignore[arg-type]
    wrong = [accepted(1, T0 - 10, "old"), accepted(2, T0 + 10, "old")]
    assert not the_edit(wrong, [1, 2], **edit).ok  # type: ignore[arg-type]
    # Nothing sent after the edit proves nothing.
    assert not the_edit(log[:1], [1, 2], **edit).ok  # type: ignore[arg-type]


def test_counts_that_drift_from_the_messages_fail() -> None:
    counted = {"message_count": {"1/sent": 5, "1/expired": 2}}
    assert counts_kept({"message_count": {"1/sent": 5, "1/expired": 2}}, counted).ok
    assert not counts_kept({"message_count": {"1/sent": 4, "1/expired": 2}}, counted).ok
    extra = {"message_count": {"1/sent": 5, "1/expired": 2, "1/failed": 1}}
    assert not counts_kept(extra, counted).ok
    # A folded-away key whose sum is 0 is no difference.
    assert counts_kept({"message_count": {"1/sent": 5, "1/expired": 2, "1/x": 0}}, counted).ok
