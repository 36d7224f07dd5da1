"""What a soak run must have kept, judged at its end from the database, the gateway's own record
and Temporal, each check with its figure.

The gateway's record (the simulator's `/_sim/accepted`) is the judge of what reached a phone and
when: each acceptance with the moment its request arrived. The sender judges a message's window
and end time just before its request leaves, so an arrival may trail the judgement by the
transit; TOLERANCE_S allows for it and nothing more.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.models import OPEN_MESSAGE_STATUSES, MessageStatus
from core.windows import SendWindow, is_open
from soak.faults import FaultRecord
from soak.plan import POSTGRES_RESTART, TEMPORAL_RESTART, WORKER_KILL

TOLERANCE_S = 2.0
# A duplicate belongs to a kill or restart when its first acceptance falls from this long before
# the fault (a send accepted whose answer or record the fault lost: the send timeout and some)
# to this long after the process was back (a request still on the wire, retried).
BLAME_BEFORE_S = 20.0
BLAME_AFTER_S = 20.0
# What went out: a receipt changes `sent` into one of the others.
WENT_OUT = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED})
# Faults that may leave sends half-done: what was in flight when they struck may go twice.
IN_FLIGHT_FAULTS = frozenset({WORKER_KILL, POSTGRES_RESTART, TEMPORAL_RESTART})


@dataclass(frozen=True)
class MessageRow:
    id: int
    dispatch_id: int
    status: str
    timezone: str


@dataclass(frozen=True)
class DispatchRow:
    id: int
    name: str
    status: str
    start_at: datetime
    end_at: datetime
    window: SendWindow | None


@dataclass(frozen=True)
class Acceptance:
    """One 200 of the gateway (a message accepted twice appears twice); epoch seconds."""

    msg_id: int
    arrived_at: float
    accepted_at: float
    text: str


@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "figure": self.figure, "detail": self.detail}


def every_message_final(messages: Sequence[MessageRow], dispatches: Sequence[DispatchRow]) -> Check:
    open_ = Counter(m.status for m in messages if m.status in OPEN_MESSAGE_STATUSES)
    unfinished = {d.name: d.status for d in dispatches if d.status != "completed"}
    return Check(
        "every message final, every dispatch completed",
        not open_ and not unfinished,
        f"{sum(open_.values())} of {len(messages)} open; dispatches not completed: "
        f"{unfinished or 'none'}",
        {"open": dict(open_), "unfinished": unfinished},
    )


def _blame(
    first_accepted: dict[int, float], faults: Sequence[FaultRecord]
) -> tuple[dict[int, list[int]], list[int]]:
    """Each message laid at the door of the latest kill or restart whose span holds its first
    acceptance (by the fault's index), and those no such fault explains."""
    suspects = _suspects(faults)
    blamed: dict[int, list[int]] = defaultdict(list)
    unexplained: list[int] = []
    for msg_id, at in sorted(first_accepted.items()):
        holding = [
            f
            for f in suspects
            if f.started - BLAME_BEFORE_S <= at <= (f.ended or f.started) + BLAME_AFTER_S
        ]
        if not holding:
            unexplained.append(msg_id)
            continue
        before = [f for f in holding if f.started <= at]
        blamed[(before[-1] if before else holding[0]).index].append(msg_id)
    return blamed, unexplained


def _suspects(faults: Sequence[FaultRecord]) -> list[FaultRecord]:
    return sorted(
        (f for f in faults if f.kind in IN_FLIGHT_FAULTS and f.outcome == "done"),
        key=lambda f: f.started,
    )


def _first_accepted(acceptances: Sequence[Acceptance]) -> dict[int, float]:
    first: dict[int, float] = {}
    for a in acceptances:
        first.setdefault(a.msg_id, a.accepted_at)
    return first


def unrecorded(messages: Sequence[MessageRow], acceptances: Sequence[Acceptance]) -> list[int]:
    """Messages the gateway took that the database does not have as gone out: a request in
    flight when its worker died or its record could not be written, whose message a later
    attempt then judged (expired, say) without knowing the gateway had it."""
    statuses = {m.id: m.status for m in messages}
    return sorted({a.msg_id for a in acceptances if statuses.get(a.msg_id) not in WENT_OUT})


def nothing_lost(
    messages: Sequence[MessageRow],
    acceptances: Sequence[Acceptance],
    faults: Sequence[FaultRecord],
) -> Check:
    """Every message recorded as gone out reached the gateway, and every message the gateway
    took is recorded as gone out, but those in flight at a kill or a restart (each_once bounds
    them with the duplicates)."""
    accepted = {a.msg_id for a in acceptances}
    statuses = {m.id: m.status for m in messages}
    recorded_unsent = sorted(
        m.id for m in messages if m.status in WENT_OUT and m.id not in accepted
    )
    first = _first_accepted(acceptances)
    taken = unrecorded(messages, acceptances)
    blamed, unexplained = _blame({m: first[m] for m in taken}, faults)
    in_flight = sum(len(ids) for ids in blamed.values())
    return Check(
        "nothing lost",
        not recorded_unsent and not unexplained,
        f"{len(accepted)} messages at the gateway; recorded sent but never accepted: "
        f"{len(recorded_unsent)}; accepted but recorded otherwise: {len(taken)} "
        f"({in_flight} in flight at a kill or restart, {len(unexplained)} unexplained)",
        {
            "recorded_unsent": recorded_unsent[:50],
            "in_flight_unrecorded": {
                str(i): statuses.get(i) for ids in blamed.values() for i in ids[:50]
            },
            "unexplained": {
                str(i): {"status": statuses.get(i, "not a message of the run"), "at": first[i]}
                for i in unexplained[:50]
            },
        },
    )


def each_once(
    acceptances: Sequence[Acceptance],
    faults: Sequence[FaultRecord],
    *,
    send_concurrency: int,
    workers: int,
    unrecorded_ids: Sequence[int] = (),
) -> Check:
    """Each message accepted once, but those in flight at a kill or a restart: each duplicate
    (and each message taken but recorded otherwise) is laid at the door of the latest such
    fault whose span holds its first acceptance; a kill of one worker may leave
    SEND_CONCURRENCY sends half-done, a restart of Temporal or PostgreSQL those of every
    worker."""
    times: Counter[int] = Counter(a.msg_id for a in acceptances)
    first = _first_accepted(acceptances)
    duplicated = sorted(msg_id for msg_id, n in times.items() if n > 1)
    blamed, unexplained = _blame({m: first[m] for m in duplicated}, faults)
    taken, _ = _blame({m: first[m] for m in unrecorded_ids}, faults)
    bound = {WORKER_KILL: send_concurrency}
    over = {}
    per_fault = {}
    for f in _suspects(faults):
        limit = bound.get(f.kind, send_concurrency * workers)
        count = len(blamed.get(f.index, [])) + len(taken.get(f.index, []))
        per_fault[str(f.index)] = {"kind": f.kind, "in_flight": count, "bound": limit}
        if count > limit:
            over[str(f.index)] = count
    extra = sum(times[m] - 1 for m in duplicated)
    return Check(
        "each message once, but what was in flight at a kill",
        not unexplained and not over,
        f"{len(duplicated)} messages accepted more than once ({extra} extra acceptances) over "
        f"{len(per_fault)} kills and restarts; unexplained: {len(unexplained)}; over the bound: "
        f"{len(over)}",
        {"per_fault": per_fault, "unexplained": unexplained[:50], "over_bound": over},
    )


def inside_windows(
    messages: Sequence[MessageRow],
    dispatches: Sequence[DispatchRow],
    acceptances: Sequence[Acceptance],
) -> list[Check]:
    """No request arrived outside its client's window, nor after its dispatch's end."""
    of_message = {m.id: m for m in messages}
    of_dispatch = {d.id: d for d in dispatches}
    outside: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    tolerance = timedelta(seconds=TOLERANCE_S)
    for a in acceptances:
        message = of_message.get(a.msg_id)
        if message is None:
            continue
        dispatch = of_dispatch[message.dispatch_id]
        arrived = datetime.fromtimestamp(a.arrived_at, UTC)
        if arrived > dispatch.end_at + tolerance:
            late.append(
                {"msg_id": a.msg_id, "arrived": arrived.isoformat(), "dispatch": dispatch.name}
            )
        judged = arrived - tolerance
        if not (
            is_open(at=arrived, window=dispatch.window, timezone=message.timezone)
            or is_open(at=judged, window=dispatch.window, timezone=message.timezone)
        ):
            outside.append(
                {
                    "msg_id": a.msg_id,
                    "arrived": arrived.isoformat(),
                    "timezone": message.timezone,
                    "dispatch": dispatch.name,
                }
            )
    return [
        Check(
            "nothing sent outside its client's window",
            not outside,
            f"{len(outside)} of {len(acceptances)} acceptances arrived outside the window",
            {"outside": outside[:50]},
        ),
        Check(
            "nothing sent after end_at",
            not late,
            f"{len(late)} arrived after their dispatch's end",
            {"late": late[:50]},
        ),
    ]


def the_edit(
    acceptances: Sequence[Acceptance],
    message_ids: Iterable[int],
    *,
    before_text: str,
    after_text: str,
    edit_sent: float,
    edit_answered: float,
) -> Check:
    """The paused dispatch's messages that went before its edit carry the old text, those after
    the new one (the worker reads the text at the moment of sending)."""
    ids = set(message_ids)
    wrong: list[dict[str, Any]] = []
    before = after = 0
    for a in acceptances:
        if a.msg_id not in ids:
            continue
        if a.arrived_at < edit_sent - TOLERANCE_S:
            before += 1
            if a.text != before_text:
                wrong.append({"msg_id": a.msg_id, "text": a.text, "when": "before"})
        elif a.arrived_at > edit_answered + TOLERANCE_S:
            after += 1
            if a.text != after_text:
                wrong.append({"msg_id": a.msg_id, "text": a.text, "when": "after"})
    return Check(
        "the paused dispatch's edit applies from then on",
        not wrong and after > 0,
        f"{before} sent before the edit, {after} after; {len(wrong)} with the wrong text",
        {"wrong": wrong[:50]},
    )


def counts_kept(kept: dict[str, dict[str, int]], counted: dict[str, dict[str, int]]) -> Check:
    """The counts the triggers keep (by table, then key) against a count over the messages."""
    mismatches = {
        f"{table}:{key}": {"kept": kept.get(table, {}).get(key, 0), "counted": n}
        for table, rows in counted.items()
        for key, n in rows.items()
        if kept.get(table, {}).get(key, 0) != n
    }
    mismatches |= {
        f"{table}:{key}": {"kept": n, "counted": 0}
        for table, rows in kept.items()
        for key, n in rows.items()
        if n and key not in counted.get(table, {})
    }
    keys = sum(len(rows) for rows in counted.values())
    return Check(
        "counts kept by triggers equal a count over the messages",
        not mismatches,
        f"{keys} counts compared, {len(mismatches)} differ",
        {"differ": mismatches},
    )
