"""The message counts the triggers keep are the counts of the rows, through inserts, updates,
deletes, a dispatch's cascade, a rolled-back transaction and the fold."""

import sqlalchemy as sa

from core.db import Database
from core.models import message_count_t
from core.stats import compact_counts, counts_by_dispatch, total_counts
from tests.factories import make_client, make_dispatch, make_messages


async def counted(db: Database) -> dict[tuple[int, str], int]:
    async with db.sessions() as session:
        rows = await session.execute(
            sa.text("SELECT dispatch_id, status, count(*) FROM message GROUP BY 1, 2")
        )
        return {(row[0], row[1]): row[2] for row in rows}


async def kept(db: Database) -> dict[tuple[int, str], int]:
    async with db.sessions() as session:
        c = message_count_t.c
        rows = await session.execute(
            sa.select(c.dispatch_id, c.status, sa.func.sum(c.n)).group_by(c.dispatch_id, c.status)
        )
        return {(row[0], row[1]): int(row[2]) for row in rows if row[2]}


async def test_counts_follow_every_change_and_survive_the_fold(db: Database) -> None:
    clients = [await make_client(db) for _ in range(6)]
    first, second = await make_dispatch(db), await make_dispatch(db)
    await make_messages(db, first, clients, cohort=None)
    await make_messages(db, second, clients[:3], cohort=None)
    async with db.sessions() as session:
        await session.execute(
            sa.text(
                "UPDATE message SET status = 'sent' WHERE dispatch_id = :d AND client_id <= :c"
            ),
            {"d": first.id, "c": clients[2].id},
        )
        await session.execute(sa.text("UPDATE message SET attempts = attempts + 1"))
        await session.execute(sa.text("DELETE FROM client WHERE id = :c"), {"c": clients[5].id})
        await session.commit()
    async with db.sessions() as session:
        await session.execute(sa.text("UPDATE message SET status = 'failed'"))
        await session.rollback()
    assert await kept(db) == await counted(db)
    async with db.sessions() as session:
        by_dispatch = await counts_by_dispatch(session=session, dispatch_ids=[first.id])
        totals = await total_counts(session=session)
    assert by_dispatch[first.id]["sent"] == 3 and by_dispatch[first.id]["pending"] == 3
    assert totals["pending"] == 6 and sum(totals.values()) == 9

    async with db.sessions() as session:
        await session.execute(sa.text("DELETE FROM dispatch WHERE id = :d"), {"d": second.id})
        await session.commit()
        assert await compact_counts(session) > 0
        rows = await session.execute(sa.select(sa.func.count()).select_from(message_count_t))
        # One row per (dispatch, status) left; none for the deleted dispatch.
        assert rows.scalar_one() == 2
    assert await kept(db) == await counted(db)


async def test_sends_per_minute_follow_the_messages(db: Database) -> None:
    clients = [await make_client(db) for _ in range(4)]
    dispatch, other = await make_dispatch(db), await make_dispatch(db)
    await make_messages(db, dispatch, clients, cohort=None)
    await make_messages(db, other, clients[:1], cohort=None)
    statements = [
        "UPDATE message SET status = 'sent', sent_at = now() WHERE client_id = :a",
        "UPDATE message SET status = 'sent', sent_at = now() - interval '5 minutes'"
        " WHERE client_id = :b",
        "UPDATE message SET attempts = attempts + 1",  # sent rows stay sent: no change
        "UPDATE message SET status = 'failed' WHERE client_id = :c",
    ]
    async with db.sessions() as session:
        for statement in statements:
            await session.execute(
                sa.text(statement),
                {"a": clients[0].id, "b": clients[1].id, "c": clients[2].id},
            )
        await session.commit()

    async def by_minute() -> dict[tuple[int, object], int]:
        async with db.sessions() as session:
            kept_rows = await session.execute(
                sa.text(
                    "SELECT dispatch_id, minute, sum(n) FROM message_sent_minute"
                    " GROUP BY 1, 2 HAVING sum(n) <> 0"
                )
            )
            real = await session.execute(
                sa.text(
                    "SELECT dispatch_id, date_trunc('minute', sent_at), count(*) FROM message"
                    " WHERE status = 'sent' GROUP BY 1, 2"
                )
            )
            counted_rows = {(r[0], r[1]): int(r[2]) for r in real}
            assert {(r[0], r[1]): int(r[2]) for r in kept_rows} == counted_rows
            return counted_rows

    minutes = await by_minute()
    assert sum(minutes.values()) == 3 and len(minutes) == 3
    async with db.sessions() as session:
        await session.execute(sa.text("DELETE FROM dispatch WHERE id = :d"), {"d": other.id})
        await session.commit()
        await compact_counts(session)
    assert sum((await by_minute()).values()) == 2
