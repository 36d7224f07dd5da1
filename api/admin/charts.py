"""The admin page's charts, decided on the server and drawn in the browser: each is a title, its
bars' labels (times in the operator's zone), its series with their units, and a sentence that
says the same in words (for screen readers, and for a browser without scripts). admin.js draws
them with Chart.js, vendored in static/vendor/, from the JSON of `Chart.spec()`."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from api.admin.common import plural
from api.schemas.statistics import RouteStats, TimelinePoint
from api.services.statistics import HourOfRequests, HourOfSends

# Fewer bars than this over a span are padded with the (empty) buckets before and after it,
# so that one minute of sends is a bar among others, not the whole chart.
MIN_BARS = 30

BLUE, GREEN, ORANGE, RED, GREY = "#1f5fbf", "#1e7b3a", "#b86200", "#b3261e", "#8a93a3"


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]
    color: str = BLUE


@dataclass
class Chart:
    """One chart: bars (or a stack of them) per label, the value axis in `unit`; `x_title`
    names the labels' axis and `y_title` the values' (across and up, unless `horizontal`)."""

    id: str
    title: str
    labels: list[str]
    series: list[Series]
    x_title: str
    y_title: str
    summary: str
    unit: str = "messages"  # "%" for a share: the axis runs 0-100
    horizontal: bool = False
    stacked: bool = False
    empty: bool = False
    # The full instant of each bar, for the tooltip (labels may be short).
    titles: list[str] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "titles": self.titles or self.labels,
            "series": [
                {"label": s.label, "values": s.values, "color": s.color} for s in self.series
            ],
            "x_title": self.x_title,
            "y_title": self.y_title,
            "unit": self.unit,
            "horizontal": self.horizontal,
            "stacked": self.stacked,
            "empty": self.empty,
        }


def _buckets(*, step: timedelta, first: datetime, last: datetime, now: datetime) -> list[datetime]:
    """Every bucket from `first` to `last`, padded to MIN_BARS with buckets after it (up to
    `now`: none in the future) and then before it."""
    slots: list[datetime] = []
    at = first
    while at <= last and len(slots) < 10_000:
        slots.append(at)
        at += step
    after = 0
    while len(slots) < MIN_BARS and slots[-1] + step <= now and after < MIN_BARS // 2:
        slots.append(slots[-1] + step)
        after += 1
    while len(slots) < MIN_BARS:
        slots.insert(0, slots[0] - step)
    return slots


def _label(instant: datetime, zone: str, pattern: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime(pattern)


def sends_over_time(
    points: Sequence[TimelinePoint],
    *,
    id: str,
    bucket: str,
    zone: str,
    now: datetime,
    since: datetime | None = None,
) -> Chart:
    """Messages sent per minute or hour, every bucket of the span shown (0 where none went);
    `since` starts the span there rather than at the first send."""
    per = "minute" if bucket == "minute" else "hour"
    title = f"Messages sent per {per}"
    chart = Chart(
        id=id,
        title=title,
        labels=[],
        series=[],
        x_title=f"{per} ({zone})",
        y_title=f"messages / {per}",
        summary="Nothing sent yet.",
        empty=True,
    )
    if not any(point.sent for point in points):
        return chart
    step = timedelta(minutes=1) if per == "minute" else timedelta(hours=1)
    counts = {point.at: point.sent for point in points}
    first = min(counts) if since is None else min(since, min(counts))
    slots = _buckets(step=step, first=first, last=max(counts), now=now)
    span_days = (slots[-1] - slots[0]) >= timedelta(days=1)
    short = "%H:%M" if per == "minute" and not span_days else "%a %H:%M"
    values = [counts.get(slot, 0) for slot in slots]
    total, peak = sum(values), max(values)
    peak_at = _label(slots[values.index(peak)], zone, "%a %H:%M")
    chart.labels = [_label(slot, zone, short) for slot in slots]
    chart.titles = [_label(slot, zone, "%a %d %b %H:%M") + f" ({zone})" for slot in slots]
    chart.series = [Series("sent", [float(v) for v in values])]
    chart.summary = (
        f"{plural(total, 'message')} sent between {chart.labels[0]} and {chart.labels[-1]} "
        f"({zone}); at most {peak} in one {per}, at {peak_at}."
    )
    chart.empty = False
    return chart


# A route's messages by what became of them, in the order they stack.
ROUTE_OUTCOMES = (
    ("delivered", ("delivered",), GREEN),
    ("sent, no receipt yet", ("sent",), BLUE),
    ("undelivered", ("undelivered",), ORANGE),
    ("failed", ("failed",), RED),
    ("not sent yet", ("pending", "retrying"), GREY),
)


def by_route(routes: Sequence[RouteStats], *, id: str) -> Chart:
    """Each route's messages (GET /dispatches/{id}/stats), stacked by what became of them."""
    chart = Chart(
        id=id,
        title="Messages per send route",
        labels=[r.route for r in routes],
        series=[],
        x_title="",  # the routes' names say it
        y_title="messages",
        summary="No message has gone through a route yet.",
        horizontal=True,
        stacked=True,
        empty=not routes,
    )
    for label, statuses, color in ROUTE_OUTCOMES:
        values = [float(sum(getattr(r.messages, s) for s in statuses)) for r in routes]
        if any(values):
            chart.series.append(Series(label, values, color))
    if routes:
        chart.summary = (
            "; ".join(
                f"{r.route}: "
                + ", ".join(
                    f"{int(series.values[i] or 0)} {series.label}" for series in chart.series
                )
                for i, r in enumerate(routes)
            )
            + "."
        )
    return chart


def _hours(since: datetime, now: datetime) -> list[datetime]:
    at = since.replace(minute=0, second=0, microsecond=0)
    slots = []
    while at <= now:
        slots.append(at)
        at += timedelta(hours=1)
    return slots


def delivered_share(
    hours: Sequence[HourOfSends], *, id: str, zone: str, since: datetime, now: datetime
) -> Chart | None:
    """The share of each hour's sends that their receipts made delivered; None before any
    receipt came (a gateway that sends none would show 0 % everywhere)."""
    if not any(h.delivered or h.undelivered for h in hours):
        return None
    by_hour = {h.at: h for h in hours}
    slots = _hours(since, now)
    values: list[float | None] = []
    for slot in slots:
        h = by_hour.get(slot)
        values.append(round(100 * h.delivered / h.went_out, 1) if h and h.went_out else None)
    delivered = sum(h.delivered for h in hours)
    went_out = sum(h.went_out for h in hours)
    return Chart(
        id=id,
        title="Delivered share of each hour's sends",
        labels=[_label(s, zone, "%a %H:%M") for s in slots],
        titles=[_label(s, zone, "%a %d %b %H:%M") + f" ({zone})" for s in slots],
        series=[Series("delivered", values, GREEN)],
        x_title=f"hour of the send ({zone})",
        y_title="% delivered",
        unit="%",
        summary=f"Of {plural(went_out, 'message')} sent in these hours, {delivered} were "
        f"delivered ({100 * delivered // went_out} %); hours without a send are left blank.",
    )


def error_rate(
    hours: Sequence[HourOfRequests], *, id: str, zone: str, since: datetime, now: datetime
) -> Chart:
    """The remote's error rate hour by hour: of its requests, the share that did not end in a
    send (blank where none was made)."""
    by_hour = {h.at: h for h in hours}
    slots = _hours(since, now)
    values: list[float | None] = []
    for slot in slots:
        h = by_hour.get(slot)
        values.append(
            round(100 * (h.attempts - h.sent) / h.attempts, 1) if h and h.attempts else None
        )
    attempts = sum(h.attempts for h in hours)
    worst = max((v for v in values if v is not None), default=None)
    return Chart(
        id=id,
        title="The gateway's error rate per hour",
        labels=[_label(s, zone, "%a %H:%M") for s in slots],
        titles=[_label(s, zone, "%a %d %b %H:%M") + f" ({zone})" for s in slots],
        series=[Series("requests that failed", values, RED)],
        x_title=f"hour ({zone})",
        y_title="% of requests failed",
        unit="%",
        summary="No request in these hours."
        if worst is None
        else f"{plural(attempts, 'request')} in these hours; "
        + ("none failed." if not worst else f"at worst {worst:g} % of an hour's failed."),
        empty=worst is None,
    )
