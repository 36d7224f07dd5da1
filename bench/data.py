"""The bench's database work, straight through asyncpg: bulk clients, and a dispatch's figures.

Clients go in with COPY, not through the API: a million POSTs would time the API, not the
dispatch. Figures are computed by PostgreSQL (percentiles included), so that a million
messages never travel to the bench process.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bench.figures import Delays
from core.models import MessageStatus
from core.windows import RUSSIA_ZONES as RUSSIA_ZONES  # the zones the bench spreads clients over
from core.windows import SendWindow, next_send_instant

DEFAULT_ZONE = "Europe/Moscow"
TAG = "bench"
# Coprime with 10**9: i -> i * stride mod 10**9 is a bijection, so phones are unique for any
# count below a billion while their operator codes (digits 2-4) spread over 900-999.
PHONE_STRIDE = 7919
FINAL_STATUSES = [
    str(status)
    for status in (
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
    )
]

Connection = Any  # asyncpg.Connection: the library ships no type information


def asyncpg_dsn(database_url: str) -> str:
    """The service's SQLAlchemy URL (postgresql+asyncpg://...) as a DSN asyncpg takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def connect(database_url: str) -> Connection:
    return await asyncpg.connect(asyncpg_dsn(database_url))


def phone(index: int) -> str:
    return f"79{(index * PHONE_STRIDE) % 1_000_000_000:09d}"


def client_records(count: int, zones: Sequence[str]) -> Iterator[tuple[str, str, str, str]]:
    """(phone, operator_code, tag, timezone) rows, zones taken in turn: an even spread."""
    for index in range(count):
        number = phone(index)
        yield number, number[1:4], TAG, zones[index % len(zones)]


async def reset_tables(conn: Connection) -> None:
    # No RESTART IDENTITY: workflow ids derive from dispatch ids, and the Temporal server
    # still holds the earlier scenarios' workflows.
    # CASCADE: every table that refers to these (idempotency keys) empties with them. The
    # counts kept by triggers go with `message` (TRUNCATE bypasses the triggers), and the
    # routes' circuits with them: a scenario must not start with a route left open.
    await conn.execute(
        "TRUNCATE message, message_count, message_sent_minute, message_route_count,"
        " send_route, dispatch, client CASCADE"
    )


async def insert_clients(conn: Connection, *, count: int, zones: Sequence[str]) -> None:
    await conn.copy_records_to_table(
        "client",
        records=client_records(count, zones),
        columns=["phone", "operator_code", "tag", "timezone"],
    )
    # Fresh statistics, as autovacuum would give a table that grew over time: the audience
    # pages must not be planned for an empty table.
    await conn.execute("ANALYZE client")


@dataclass(frozen=True)
class DispatchRow:
    id: int
    created_at: datetime
    start_at: datetime
    end_at: datetime
    window: SendWindow | None


async def load_dispatch(conn: Connection, dispatch_id: int) -> DispatchRow:
    row = await conn.fetchrow(
        "SELECT id, created_at, start_at, end_at, window_start, window_end"
        " FROM dispatch WHERE id = $1",
        dispatch_id,
    )
    if row is None:
        raise LookupError(f"dispatch {dispatch_id} is not in the database")
    window = None
    if row["window_start"] is not None:
        window = SendWindow(start=row["window_start"], end=row["window_end"])
    return DispatchRow(
        id=int(row["id"]),
        created_at=row["created_at"],
        start_at=row["start_at"],
        end_at=row["end_at"],
        window=window,
    )


def earliest_instants(dispatch: DispatchRow, zones: Sequence[str]) -> dict[str, datetime | None]:
    """Per zone, the first instant a message may go: max(start_at, the window's opening).
    None when the window does not open before end_at."""
    return {
        zone: next_send_instant(
            now=dispatch.start_at,
            start_at=dispatch.start_at,
            end_at=dispatch.end_at,
            window=dispatch.window,
            timezone=zone,
        )
        for zone in zones
    }


async def client_zones(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT timezone, count(*) AS n FROM client GROUP BY timezone")
    return {str(row["timezone"]): int(row["n"]) for row in rows}


async def status_counts(conn: Connection, dispatch_id: int) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM message WHERE dispatch_id = $1 GROUP BY status",
        dispatch_id,
    )
    return {str(row["status"]): int(row["n"]) for row in rows}


async def status_counts_by_zone(conn: Connection, dispatch_id: int) -> dict[str, dict[str, int]]:
    rows = await conn.fetch(
        "SELECT c.timezone, m.status, count(*) AS n FROM message m"
        " JOIN client c ON c.id = m.client_id WHERE m.dispatch_id = $1"
        " GROUP BY c.timezone, m.status",
        dispatch_id,
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(str(row["timezone"]), {})[str(row["status"])] = int(row["n"])
    return counts


async def final_in_zone(conn: Connection, dispatch_id: int, zone: str) -> int:
    """Messages of one zone that reached a final status."""
    value = await conn.fetchval(
        "SELECT count(*) FROM message m JOIN client c ON c.id = m.client_id"
        " WHERE m.dispatch_id = $1 AND c.timezone = $2 AND m.status = ANY($3::text[])",
        dispatch_id,
        zone,
        FINAL_STATUSES,
    )
    return int(value)


async def first_client_ids(conn: Connection, dispatch_id: int, limit: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT client_id FROM message WHERE dispatch_id = $1 AND client_id IS NOT NULL"
        " ORDER BY id LIMIT $2",
        dispatch_id,
        limit,
    )
    return [int(row["client_id"]) for row in rows]


async def db_rate(conn: Connection, dispatch: DispatchRow) -> tuple[int, float | None]:
    """(messages, messages / (last update of any of them - the dispatch's creation))."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, max(updated_at) AS last FROM message WHERE dispatch_id = $1",
        dispatch.id,
    )
    messages, last = int(row["n"]), row["last"]
    if last is None:
        return messages, None
    seconds = (last - dispatch.created_at).total_seconds()
    return messages, (messages / seconds if seconds > 0 else None)


async def sent_rate(
    conn: Connection, dispatch: DispatchRow, zones: Sequence[str]
) -> tuple[int, float | None]:
    """(sent messages of these zones, their count / (last sent_at - the dispatch's creation))."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, max(m.sent_at) AS last FROM message m"
        " JOIN client c ON c.id = m.client_id"
        " WHERE m.dispatch_id = $1 AND m.status = 'sent' AND c.timezone = ANY($2::text[])",
        dispatch.id,
        list(zones),
    )
    sent, last = int(row["n"]), row["last"]
    if last is None:
        return sent, None
    seconds = (last - dispatch.created_at).total_seconds()
    return sent, (sent / seconds if seconds > 0 else None)


# The delay of each sent message from its zone's earliest instant, summarised per zone and
# over all of them together (the grouping set () gives the row whose zone is NULL).
DELAYS_SQL = """
WITH opening(zone, opens_at) AS (
    SELECT * FROM unnest($2::text[], $3::timestamptz[])
), delay AS (
    SELECT c.timezone AS zone, extract(epoch FROM m.sent_at - o.opens_at)::float8 AS seconds
    FROM message m
    JOIN client c ON c.id = m.client_id
    JOIN opening o ON o.zone = c.timezone
    WHERE m.dispatch_id = $1 AND m.status = 'sent' AND m.sent_at IS NOT NULL
)
SELECT zone, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY seconds) AS p99,
       max(seconds) AS worst
FROM delay
GROUP BY GROUPING SETS ((zone), ())
"""


def _delays(row: Any) -> Delays:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(float(value), 3)

    return Delays(
        count=int(row["n"]),
        p50_s=rounded(row["p50"]),
        p99_s=rounded(row["p99"]),
        max_s=rounded(row["worst"]),
    )


async def delays(
    conn: Connection, dispatch_id: int, opens: dict[str, datetime | None]
) -> tuple[Delays, dict[str, Delays]]:
    """Delays over every zone given (those that never open are left out), and per zone."""
    known = {zone: at for zone, at in opens.items() if at is not None}
    rows = await conn.fetch(DELAYS_SQL, dispatch_id, list(known), list(known.values()))
    overall = Delays(count=0, p50_s=None, p99_s=None, max_s=None)
    per_zone: dict[str, Delays] = {}
    for row in rows:
        if row["zone"] is None:
            overall = _delays(row)
        else:
            per_zone[str(row["zone"])] = _delays(row)
    return overall, per_zone
