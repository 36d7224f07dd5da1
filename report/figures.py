"""The daily report's figures: one local day (per dispatch by status, totals, per send route
the messages that went out and failed, the segments sent, and how many of them the receipts
say were delivered, failure reasons by count), read from PostgreSQL, and its rendering as plain
text and HTML."""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from html import escape
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import WENT_OUT_STATUSES, MessageStatus, message_t

# Failure reasons listed, the most frequent first.
TOP_REASONS = 20


@dataclass
class RouteDay:
    """One send route's day: messages that went out through it (sent, delivered, undelivered)
    and failed, SMS segments sent, and of those that went out, the delivered and undelivered
    ones (by their receipts)."""

    sent: int = 0
    failed: int = 0
    segments_sent: int = 0
    delivered: int = 0
    undelivered: int = 0

    def delivered_share(self) -> str:
        """`90 %` of the messages that went out; `-` when none did."""
        return f"{100 * self.delivered // self.sent} %" if self.sent else "-"


@dataclass
class ReportFigures:
    """What happened to messages during one local day: the messages whose status last changed
    that day, by dispatch and status, and the sent and failed ones by route; and the reasons
    of those that failed or expired."""

    day: str  # ISO date
    timezone: str
    by_dispatch: dict[int, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, RouteDay] = field(default_factory=dict)  # by name
    reasons: list[tuple[str, int]] = field(default_factory=list)


def previous_day(now: datetime, timezone: str) -> str:
    """The ISO date of the day before `now`'s, in `timezone`."""
    return (now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)).isoformat()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


async def gather(session: AsyncSession, *, day: date, timezone: str) -> ReportFigures:
    start, end = day_bounds(day, timezone)
    in_day = (message_t.c.updated_at >= start, message_t.c.updated_at < end)
    figures = ReportFigures(day=day.isoformat(), timezone=timezone)
    rows = await session.execute(
        sa.select(message_t.c.dispatch_id, message_t.c.status, sa.func.count())
        .where(*in_day)
        .group_by(message_t.c.dispatch_id, message_t.c.status)
        .order_by(message_t.c.dispatch_id)
    )
    for dispatch_id, status, count in rows:
        figures.by_dispatch.setdefault(dispatch_id, {})[status] = count
        figures.totals[status] = figures.totals.get(status, 0) + count
    routes = await session.execute(
        sa.select(
            message_t.c.route,
            message_t.c.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(message_t.c.segments), 0),
        )
        .where(
            *in_day,
            message_t.c.route.is_not(None),
            message_t.c.status.in_([*WENT_OUT_STATUSES, MessageStatus.FAILED]),
        )
        .group_by(message_t.c.route, message_t.c.status)
        .order_by(message_t.c.route)
    )
    for route, status, count, segments in routes:
        day_of = figures.by_route.setdefault(route, RouteDay())
        if status in WENT_OUT_STATUSES:
            # Went out: sent, and what the receipts made of it since.
            day_of.sent += count
            day_of.segments_sent += int(segments)
            if status == MessageStatus.DELIVERED:
                day_of.delivered = count
            elif status == MessageStatus.UNDELIVERED:
                day_of.undelivered = count
        else:
            day_of.failed = count
    reasons = await session.execute(
        sa.select(message_t.c.last_error, sa.func.count())
        .where(
            *in_day,
            message_t.c.status.in_(
                [MessageStatus.FAILED, MessageStatus.EXPIRED, MessageStatus.UNRENDERED]
            ),
        )
        .group_by(message_t.c.last_error)
        .order_by(sa.func.count().desc(), message_t.c.last_error)
        .limit(TOP_REASONS)
    )
    figures.reasons = [(reason or "(none)", count) for reason, count in reasons]
    return figures


STATUSES = [str(status) for status in MessageStatus]


def subject(figures: ReportFigures) -> str:
    """`... 200 sent (180 delivered), 230 in all`: sent counts every message that went out."""
    sent = sum(figures.totals.get(status, 0) for status in WENT_OUT_STATUSES)
    delivered = figures.totals.get(MessageStatus.DELIVERED, 0)
    return (
        f"Mailing report for {figures.day}: {sent} sent ({delivered} delivered), "
        f"{sum(figures.totals.values())} in all"
    )


ROUTE_COLUMNS = ["sent", "failed", "segments", "delivered", "undelivered", "delivered %"]


def _route_cells(day: RouteDay) -> list[str]:
    return [
        str(day.sent),
        str(day.failed),
        str(day.segments_sent),
        str(day.delivered),
        str(day.undelivered),
        day.delivered_share(),
    ]


def as_text(figures: ReportFigures) -> str:
    lines = [subject(figures), f"Day {figures.day} in {figures.timezone}.", ""]
    header = "dispatch  " + "  ".join(f"{s:>9}" for s in STATUSES)
    lines.append(header)
    for dispatch_id, counts in figures.by_dispatch.items():
        cells = "  ".join(f"{counts.get(s, 0):>9}" for s in STATUSES)
        lines.append(f"{dispatch_id:>8}  {cells}")
    lines.append("   total  " + "  ".join(f"{figures.totals.get(s, 0):>9}" for s in STATUSES))
    lines += ["", "By route:", f"{'route':<32}  " + "  ".join(f"{c:>11}" for c in ROUTE_COLUMNS)]
    lines += [
        f"{route:<32}  " + "  ".join(f"{cell:>11}" for cell in _route_cells(day))
        for route, day in figures.by_route.items()
    ] or ["  none"]
    lines += ["", "Failure reasons:"]
    lines += [f"  {count:>6}  {reason}" for reason, count in figures.reasons] or ["  none"]
    return "\n".join(lines) + "\n"


def as_html(figures: ReportFigures) -> str:
    def row(label: str, counts: dict[str, int], tag: str = "td") -> str:
        cells = "".join(f"<{tag}>{counts.get(s, 0)}</{tag}>" for s in STATUSES)
        return f"<tr><{tag}>{escape(label)}</{tag}>{cells}</tr>"

    head = "".join(f"<th>{s}</th>" for s in STATUSES)
    body = "".join(row(f"#{d}", counts) for d, counts in figures.by_dispatch.items())
    reasons = "".join(
        f"<tr><td>{count}</td><td>{escape(reason)}</td></tr>" for reason, count in figures.reasons
    )
    routes = "".join(
        f"<tr><td>{escape(route)}</td>"
        + "".join(f"<td>{c}</td>" for c in _route_cells(day))
        + "</tr>"
        for route, day in figures.by_route.items()
    )
    route_head = "".join(f"<th>{escape(c)}</th>" for c in ROUTE_COLUMNS)
    return (
        f"<html><body><h1>{escape(subject(figures))}</h1>"
        f"<p>Day {figures.day} in {escape(figures.timezone)}.</p>"
        f"<table border='1' cellpadding='4'><tr><th>dispatch</th>{head}</tr>{body}"
        f"{row('total', figures.totals, 'th')}</table>"
        "<h2>By route</h2>"
        f"<table border='1' cellpadding='4'><tr><th>route</th>{route_head}</tr>{routes}</table>"
        "<h2>Failure reasons</h2>"
        f"<table border='1' cellpadding='4'><tr><th>count</th><th>reason</th></tr>{reasons}</table>"
        "</body></html>"
    )
