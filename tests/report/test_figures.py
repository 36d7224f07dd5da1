"""The daily report's figures of one day against PostgreSQL, per send route among them, and
their rendering as text and HTML."""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db import Database
from core.models import message_t
from report import figures as report
from tests.factories import make_client, make_dispatch, make_routed_messages


async def test_the_days_figures_per_route(db: Database) -> None:
    clients = [await make_client(db) for _ in range(9)]
    dispatch = await make_dispatch(db)
    messages = await make_routed_messages(
        db,
        dispatch,
        [
            (clients[0], "sent", "mts", 2),
            (clients[1], "sent", "mts", 3),
            (clients[2], "failed", "mts", 2),
            (clients[3], "sent", "<b>bulk</b>", 1),
            (clients[4], "retrying", "bulk", 1),  # pinned, neither sent nor failed
            (clients[5], "delivered", "mts", 1),
            (clients[6], "delivered", "mts", 1),
            (clients[7], "undelivered", "mts", 2),
            (clients[8], "sent", "mts", 4),  # sent today: another day's report
        ],
    )
    yesterday = datetime.now(UTC) - timedelta(days=1)
    async with db.sessions() as session:
        await session.execute(
            sa.update(message_t)
            .where(message_t.c.id.in_([m.id for m in messages[:8]]))
            .values(updated_at=yesterday)
        )
        await session.commit()
        figures = await report.gather(session, day=yesterday.date(), timezone="UTC")

    assert figures.by_route == {
        "<b>bulk</b>": report.RouteDay(sent=1, failed=0, segments_sent=1),
        # Went out: 2 sent, 2 delivered, 1 undelivered.
        "mts": report.RouteDay(sent=5, failed=1, segments_sent=9, delivered=2, undelivered=1),
    }
    assert figures.totals == {
        "sent": 3,
        "failed": 1,
        "retrying": 1,
        "delivered": 2,
        "undelivered": 1,
    }
    assert report.subject(figures).endswith(": 6 sent (2 delivered), 8 in all")
    text = report.as_text(figures)
    lines = text.splitlines()
    header = lines[lines.index("dispatch  " + "  ".join(f"{s:>9}" for s in report.STATUSES))]
    assert "delivered" in header and "undelivered" in header
    by_route = lines[lines.index("By route:") + 1 :][:3]
    assert by_route[0].split() == [
        "route",
        "sent",
        "failed",
        "segments",
        "delivered",
        "undelivered",
        "delivered",
        "%",
    ]
    assert by_route[1].split() == ["<b>bulk</b>", "1", "0", "1", "0", "0", "0", "%"]
    assert by_route[2].split() == ["mts", "5", "1", "9", "2", "1", "40", "%"]
    html = report.as_html(figures)
    assert "<h2>By route</h2>" in html and "<b>bulk</b>" not in html
    assert (
        "<tr><td>mts</td><td>5</td><td>1</td><td>9</td><td>2</td><td>1</td><td>40 %</td></tr>"
        in html
    )
    assert "<th>delivered %</th>" in html

    async with db.sessions() as session:
        quiet = await report.gather(
            session, day=(yesterday - timedelta(days=3)).date(), timezone="UTC"
        )
    assert quiet.by_route == {}
    assert "By route:" in report.as_text(quiet)
    assert report.RouteDay().delivered_share() == "-"
