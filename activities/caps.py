"""The frequency cap at the moment of sending: which messages may go to their clients now, and
the record that counts them, as one atomic step per client.

In one transaction: the clients' rows are locked (in id order, so two batches never deadlock),
then, in a statement of its own (a snapshot taken after the locks, so it sees what another
batch committed while this one waited), their messages counted in the cap's trailing period,
then the messages let through recorded in `client_send`. Two workers sending two dispatches to
one client at once: the second waits for the first's record and counts it.

A record counts while its message is open or went out (pending, retrying, sent, delivered,
undelivered): one that ended otherwise (expired, cancelled, failed...) frees its place without
a write. A message recorded once and sent again (a retry) keeps its record.
"""

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from core import metrics
from core.caps import FrequencyCap
from core.db import SessionFactory

_LOCK = sa.text(
    "SELECT id FROM client WHERE id = ANY(CAST(:clients AS bigint[])) ORDER BY id FOR UPDATE"
)
_COUNTED = sa.text(
    """
    SELECT r.client_id, count(*) AS n FROM client_send r
    JOIN message m ON m.id = r.message_id
    WHERE r.client_id = ANY(CAST(:clients AS bigint[])) AND r.at > :since
        AND m.status IN ('pending', 'retrying', 'sent', 'delivered', 'undelivered')
        AND r.message_id <> ALL(CAST(:messages AS bigint[]))
    GROUP BY r.client_id
    """
)
_RECORDED = sa.text(
    "SELECT message_id FROM client_send WHERE message_id = ANY(CAST(:messages AS bigint[]))"
)
_RECORD = sa.text(
    """
    INSERT INTO client_send (message_id, client_id, at)
    SELECT message_id, client_id, :at FROM unnest(
        CAST(:messages AS bigint[]), CAST(:clients AS bigint[])) AS v(message_id, client_id)
    ON CONFLICT (message_id) DO NOTHING
    """
)


async def held_back(
    sessions: SessionFactory, cap: FrequencyCap, rows: Sequence[Any], *, now: datetime
) -> set[int]:
    """Of these messages (rows with `id` and `client_id`, in the order they would go), the ids
    the cap keeps from their clients now; the others are recorded as let through."""
    if not rows:
        return set()
    messages = [row.id for row in rows]
    clients = sorted({row.client_id for row in rows})
    async with sessions() as session:
        await session.execute(_LOCK, {"clients": clients})
        counted: Counter[int] = Counter(
            {
                row.client_id: int(row.n)
                for row in await session.execute(
                    _COUNTED,
                    {"clients": clients, "since": now - cap.period, "messages": messages},
                )
            }
        )
        recorded = set((await session.execute(_RECORDED, {"messages": messages})).scalars())
        held: set[int] = set()
        through: list[Any] = []
        for row in rows:
            if row.id in recorded:
                counted[row.client_id] += 1  # let through before (a retry): still counted
            elif counted[row.client_id] >= cap.messages:
                held.add(row.id)
            else:
                counted[row.client_id] += 1
                through.append(row)
        if through:
            await session.execute(
                _RECORD,
                {
                    "messages": [row.id for row in through],
                    "clients": [row.client_id for row in through],
                    "at": now,
                },
            )
        await session.commit()
    metrics.CAP_CHECKS.labels("held").inc(len(held))
    metrics.CAP_CHECKS.labels("through").inc(len(rows) - len(held))
    return held
