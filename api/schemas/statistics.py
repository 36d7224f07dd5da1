"""Numbers counted over messages or clients (the admin page reads them too): counts by status
(and by send route), sends over time, failure reasons, the remote's error rate, the size of an
audience and of its SMS."""

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import Normalization
from core.models import WENT_OUT_STATUSES, DispatchStatus, MessageStatus
from core.segments import Encoding
from core.stats import NoReceiptCounts, RouteCounts

NO_RECEIPT_DESCRIPTION = (
    "Messages still `sent` whose send is older than RECEIPT_WAIT_HOURS: no receipt came in "
    "time (counted within `sent`, not beside it; their status stays `sent`). Many of them on "
    "one route: its gateway stopped sending receipts."
)


class StatusCounts(BaseModel):
    """Messages counted by status."""

    pending: int = 0
    retrying: int = 0
    sent: int = Field(default=0, description="Taken by the gateway; no receipt decided it yet.")
    delivered: int = Field(default=0, description="The gateway's receipts: every part delivered.")
    undelivered: int = Field(
        default=0, description="A part's receipt said undelivered, expired or rejected."
    )
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    opted_out: int = Field(default=0, description="Not sent: the client opted out first.")
    unrendered: int = Field(
        default=0,
        description="Not sent: the text's placeholders need a key the client lacks (no default).",
    )
    capped: int = Field(
        default=0,
        description="Not sent: the client had had FREQUENCY_CAP's messages for the period.",
    )
    total: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> "StatusCounts":
        return cls(**counts, total=sum(counts.values()))


class RouteStats(BaseModel):
    """The messages one send route has, or may have, counted by status: those that went out
    (sent, delivered, undelivered) and failed ones went through it; a retrying or pending one
    is pinned to it (its answer was lost to a timeout, so that a failover never sends it
    twice), as is one that then expired, was cancelled or opted out."""

    route: str = Field(description="The route's name (routes no longer configured included).")
    messages: StatusCounts = Field(description="Its messages by status.")
    segments: int = Field(description="SMS parts of the messages counted, each as it went out.")
    segments_sent: int = Field(
        description="SMS parts of the messages that went out through it (sent, delivered, "
        "undelivered): what the gateway counts."
    )
    sent_without_receipt: int = Field(default=0, description=NO_RECEIPT_DESCRIPTION)

    @classmethod
    def of(
        cls, counts: RouteCounts, no_receipt: NoReceiptCounts | None = None
    ) -> list["RouteStats"]:
        """One per route, by name, with its messages still `sent` past the receipt wait."""
        no_receipt = no_receipt or {}
        return [
            cls(
                route=route,
                messages=StatusCounts.of({status: n for status, (n, _) in by_status.items()}),
                segments=sum(segments for _, segments in by_status.values()),
                segments_sent=sum(by_status.get(status, (0, 0))[1] for status in WENT_OUT_STATUSES),
                sent_without_receipt=no_receipt.get(route, 0),
            )
            for route, by_status in sorted(counts.items())
        ]


ROUTES_DESCRIPTION = (
    "Its messages that have a send route, per route (by name): every message that went out "
    "(sent, delivered, undelivered) has one, so the routes' `sent`, `delivered` and "
    "`undelivered` add up to the dispatch's."
)


class DispatchStats(BaseModel):
    """One dispatch's messages counted by status, and by send route; and those of its sent
    messages that got no receipt in time."""

    dispatch_id: int
    status: DispatchStatus
    messages: StatusCounts
    routes: list[RouteStats] = Field(description=ROUTES_DESCRIPTION)
    sent_without_receipt: int = Field(default=0, description=NO_RECEIPT_DESCRIPTION)
    receipt_wait_hours: float = Field(
        description="RECEIPT_WAIT_HOURS: how long after its send a message still `sent` counts "
        "in `sent_without_receipt`."
    )


class OverallStats(BaseModel):
    """Every dispatch with its message counts, and the totals over all of them."""

    dispatches: list[DispatchStats]
    totals: StatusCounts
    routes: list[RouteStats] = Field(
        description="Every dispatch's messages that have a send route, per route (by name): "
        "the routes' `sent`, `delivered` and `undelivered` add up to the totals'."
    )
    dispatch_count: int
    sent_without_receipt: int = Field(
        default=0, description="Over every dispatch: " + NO_RECEIPT_DESCRIPTION
    )
    receipt_wait_hours: float = Field(description="RECEIPT_WAIT_HOURS.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page of dispatches."
    )


class AudienceCount(BaseModel):
    """How many clients a dispatch with this filter would target now and, given its text, in
    how many SMS parts (the fields of the text are null without one)."""

    clients: int = Field(description="Matching clients, the stop list left out.")
    operator_codes: list[str]
    tags: list[str]
    characters: int | None = Field(
        default=None, description="Characters of the text (as stored: normalized if asked)."
    )
    encoding: Encoding | None = Field(
        default=None, description="`GSM-7` or `UCS-2`, as a dispatch's `encoding`."
    )
    segments: int | None = Field(
        default=None,
        description="SMS parts of each message; for a personal text, of the longest of a "
        "sample, as a dispatch's `segments`.",
    )
    segments_total: int | None = Field(
        default=None,
        description="`clients` times `segments`; for a personal text, estimated as a "
        "dispatch's (those lacking a key it needs left out).",
    )
    max_segments: int | None = Field(
        default=None,
        description="MAX_SEGMENTS: a dispatch whose text has more parts is refused (422).",
    )
    normalization: Normalization | None = Field(
        default=None,
        description="With `normalize_text=true`: what it would change, as in a dispatch's answer.",
    )


class TimelinePoint(BaseModel):
    at: datetime = Field(description="Start of the bucket (UTC).")
    sent: int = Field(
        description="Messages that went out in it (sent, delivered or undelivered since)."
    )


class RemoteHealth(BaseModel):
    """The remote's error rate over the last `hours`."""

    hours: int
    attempts: int = Field(description="Requests made for the messages that changed meanwhile.")
    sent: int = Field(
        description="Messages that went out (sent, delivered, undelivered) among them."
    )
    failed: int = Field(description="Messages the remote refused for good.")
    error_rate: float | None = Field(
        description="Share of those requests that did not end in `sent` (null without any)."
    )


class FailureReason(BaseModel):
    status: MessageStatus
    reason: str
    count: int
