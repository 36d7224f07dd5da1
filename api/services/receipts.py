"""Delivery receipts: each part's receipt recorded once, its message made `delivered` when every
part is and `undelivered` as soon as one is not, in bulk statements on the API side only (a
receipt never costs the send path anything).

Receipts come late, twice, out of order, and before the send is recorded (a gateway can answer
its receipt faster than our batch writes its outcome). So: a part's first receipt is the one
kept (a later one saying otherwise is out of date: a final answer is never undone); a receipt
for a message still pending waits in `message_receipt` and `apply_waiting` applies it once the
send is recorded; and the message rows are locked, in id order, for the time of one request, so
that two requests carrying two parts of one message never both miss the other's part.
"""

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.receipts import (
    Receipt,
    ReceiptOutcome,
    ReceiptResult,
    ReceiptsAnswer,
)
from core import metrics
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES, MessageStatus, message_receipt_t

log = logging.getLogger(__name__)

# Waiting receipts applied per round of `apply_waiting`.
WAITING_BATCH = 1000

_INSERT = sa.text(
    """
    INSERT INTO message_receipt AS r (message_id, part, parts, status, error, at, route, applied)
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:part AS smallint[]), CAST(:parts AS smallint[]),
        CAST(:statuses AS text[]), CAST(:errors AS text[]), CAST(:ats AS timestamptz[]),
        CAST(:routes AS text[]), CAST(:applied AS boolean[]))
    ON CONFLICT (message_id, part) DO NOTHING
    RETURNING message_id, part
    """
)

# The messages among :ids that their receipts now decide: delivered once every part is, or
# undelivered (with the first failing part's reason and time) once one part is not. Their
# receipts are marked applied, with those of every message whose send is recorded.
_DECIDE = sa.text(
    """
    WITH agg AS (
        SELECT message_id,
            bool_or(status <> 'delivered') AS failed,
            count(*) FILTER (WHERE status = 'delivered') AS delivered_parts,
            max(parts) AS parts,
            max(at) AS last_at,
            min(at) FILTER (WHERE status <> 'delivered') AS failed_at,
            (array_agg(status || coalesce(': ' || error, '') ORDER BY at)
                FILTER (WHERE status <> 'delivered'))[1] AS reason
        FROM message_receipt WHERE message_id = ANY(CAST(:ids AS bigint[]))
        GROUP BY message_id),
    decided AS (
        UPDATE message m SET
            status = CASE WHEN agg.failed THEN 'undelivered' ELSE 'delivered' END,
            receipt_at = CASE WHEN agg.failed THEN agg.failed_at ELSE agg.last_at END,
            last_error = CASE WHEN agg.failed THEN left(agg.reason, 500) ELSE m.last_error END,
            updated_at = now()
        FROM agg
        -- The ids again, so that the message rows are found by their key (a join on agg
        -- alone is planned as a scan of every message).
        WHERE m.id = ANY(CAST(:ids AS bigint[])) AND m.id = agg.message_id AND m.status = 'sent'
            AND (agg.failed OR agg.delivered_parts >= agg.parts)
        RETURNING m.id, m.status, m.dispatch_id, m.client_id, m.route, m.sent_at, m.receipt_at),
    marked AS (
        UPDATE message_receipt r SET applied = true FROM message m
        WHERE r.message_id = m.id AND r.message_id = ANY(CAST(:ids AS bigint[]))
            AND NOT r.applied AND m.status NOT IN ('pending', 'retrying'))
    SELECT * FROM decided
    """
)

# Messages whose receipts wait and whose send is now recorded (or that ended otherwise).
_WAITING = sa.text(
    """
    SELECT DISTINCT r.message_id FROM message_receipt r
    JOIN message m ON m.id = r.message_id
    WHERE NOT r.applied AND m.status NOT IN ('pending', 'retrying')
    LIMIT :limit
    """
)

# Statuses of a message for which a receipt says nothing: it did not go out.
_NOT_SENT = frozenset(
    {
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
        MessageStatus.OPTED_OUT,
        MessageStatus.UNRENDERED,
        MessageStatus.CAPPED,
    }
)


# One array parameter, so that every size of list shares one prepared statement.
_LOCK = sa.text(
    """
    SELECT id, status, dispatch_id, client_id, phone, route FROM message
    WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE
    """
)


async def _lock_messages(session: AsyncSession, message_ids: Sequence[int]) -> dict[int, Any]:
    """The messages, locked in id order for the rest of the transaction."""
    rows = await session.execute(_LOCK, {"ids": sorted(set(message_ids))})
    return {row.id: row for row in rows}


async def _decide(session: AsyncSession, message_ids: Sequence[int]) -> int:
    """Decides the messages their receipts now can; how many. The counters are counted per
    label set, once per request (a `labels()` lookup per message cost more than the SQL)."""
    if not message_ids:
        return 0
    rows = list(await session.execute(_DECIDE, {"ids": sorted(set(message_ids))}))
    decided: Counter[tuple[str, str]] = Counter()
    delays: dict[str, list[float]] = {}
    for row in rows:
        route = row.route or ""
        decided[(row.status, route)] += 1
        if row.sent_at is not None and row.receipt_at is not None:
            delays.setdefault(route, []).append((row.receipt_at - row.sent_at).total_seconds())
        log.info(
            "message is %s (receipt)",
            row.status,
            extra=ids(message_id=row.id, dispatch_id=row.dispatch_id, client_id=row.client_id),
        )
    for (status, route), count in decided.items():
        metrics.MESSAGES_RECEIPTED.labels(status, route).inc(count)
    for route, seconds in delays.items():
        histogram = metrics.RECEIPT_DELAY_SECONDS.labels(route)
        for value in seconds:
            histogram.observe(max(0.0, value))
    return len(rows)


def _outcome_of(receipt: Receipt, message: Any) -> ReceiptOutcome | None:
    """What becomes of a receipt before it is stored; None: store it."""
    if message is None or (message.client_id is None and message.phone is None):
        return ReceiptOutcome.UNKNOWN
    if message.status in _NOT_SENT:
        return ReceiptOutcome.OUT_OF_DATE
    return None


async def apply_receipts(
    *, session: AsyncSession, receipts: Sequence[Receipt]
) -> list[ReceiptOutcome]:
    """Records the receipts (each part's first), decides their messages and commits; what
    became of each, in their order."""
    messages = await _lock_messages(session, [receipt.id for receipt in receipts])
    outcomes: list[ReceiptOutcome | None] = []
    first: dict[tuple[int, int], Receipt] = {}
    to_store: list[Receipt] = []
    for receipt in receipts:
        key = (receipt.id, receipt.part)
        outcome = _outcome_of(receipt, messages.get(receipt.id))
        if outcome is None and key in first:
            same = first[key].status == receipt.status
            outcome = ReceiptOutcome.DUPLICATE if same else ReceiptOutcome.OUT_OF_DATE
        elif outcome is None:
            first[key] = receipt
            to_store.append(receipt)
        outcomes.append(outcome)
    stored = await _store(session, to_store, messages)
    known = await _known(session, [r for r in to_store if (r.id, r.part) not in stored])
    final: list[ReceiptOutcome] = []
    counted: Counter[tuple[str, str, str]] = Counter()
    for receipt, outcome in zip(receipts, outcomes, strict=True):
        key = (receipt.id, receipt.part)
        message = messages.get(receipt.id)
        if outcome is None and key in stored:
            waits = messages[receipt.id].status in OPEN_MESSAGE_STATUSES
            outcome = ReceiptOutcome.WAITING if waits else ReceiptOutcome.APPLIED
        elif outcome is None:
            same = known.get(key) == receipt.status
            outcome = ReceiptOutcome.DUPLICATE if same else ReceiptOutcome.OUT_OF_DATE
        _note(counted, receipt, outcome, message)
        final.append(outcome)
    await _decide(session, [receipt.id for receipt in to_store])
    await session.commit()
    for labels, count in counted.items():
        metrics.RECEIPTS.labels(*labels).inc(count)
    return final


def answer_of(receipts: Sequence[Receipt], outcomes: Sequence[ReceiptOutcome]) -> ReceiptsAnswer:
    """The answer to a request: its receipts' outcomes, counted and listed in order."""
    answer = ReceiptsAnswer()
    for receipt, outcome in zip(receipts, outcomes, strict=True):
        setattr(answer, outcome.value, getattr(answer, outcome.value) + 1)
        answer.results.append(ReceiptResult(id=receipt.id, part=receipt.part, outcome=outcome))
    return answer


async def _store(
    session: AsyncSession, receipts: Sequence[Receipt], messages: dict[int, Any]
) -> set[tuple[int, int]]:
    """Inserts each part's receipt unless one is known; the (id, part) stored now."""
    if not receipts:
        return set()
    rows = await session.execute(
        _INSERT,
        {
            "ids": [r.id for r in receipts],
            "part": [r.part for r in receipts],
            "parts": [r.parts for r in receipts],
            "statuses": [str(r.status) for r in receipts],
            "errors": [r.error for r in receipts],
            "ats": [r.at for r in receipts],
            "routes": [r.route for r in receipts],
            "applied": [messages[r.id].status not in OPEN_MESSAGE_STATUSES for r in receipts],
        },
    )
    return {(row.message_id, row.part) for row in rows}


async def _known(session: AsyncSession, receipts: Sequence[Receipt]) -> dict[tuple[int, int], str]:
    """The status already recorded for each of these parts."""
    if not receipts:
        return {}
    c = message_receipt_t.c
    rows = await session.execute(
        sa.select(c.message_id, c.part, c.status).where(
            sa.tuple_(c.message_id, c.part).in_([(r.id, r.part) for r in receipts])
        )
    )
    return {(row.message_id, row.part): row.status for row in rows}


def _note(
    counted: Counter[tuple[str, str, str]],
    receipt: Receipt,
    outcome: ReceiptOutcome,
    message: Any,
) -> None:
    """Counts the receipt for the metrics (after the commit) and logs it with its ids."""
    known = message is not None
    # The route the message went through, as recorded: a bounded label, whatever the gateway
    # posted as its route.
    counted[(receipt.status, message.route or "" if known else "", outcome)] += 1
    log.info(
        "receipt part %d/%d %s: %s",
        receipt.part,
        receipt.parts,
        receipt.status,
        outcome,
        extra=ids(
            message_id=receipt.id,
            dispatch_id=message.dispatch_id if known else None,
            client_id=message.client_id if known else None,
        ),
    )


async def apply_waiting(*, session: AsyncSession) -> int:
    """Applies receipts that came before their send was recorded, now that it is; how many
    messages they decided."""
    waiting = list((await session.execute(_WAITING, {"limit": WAITING_BATCH})).scalars())
    if not waiting:
        return 0
    await _lock_messages(session, waiting)
    decided = await _decide(session, waiting)
    await session.commit()
    return decided
