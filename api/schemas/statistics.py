"""Numbers counted over messages or clients (the admin page reads them too): counts by status,
sends over time, failure reasons, the remote's error rate, the size of an audience."""

from datetime import datetime

from pydantic import BaseModel, Field

from core.models import DispatchStatus, MessageStatus


class StatusCounts(BaseModel):
    """Messages counted by status."""

    pending: int = 0
    retrying: int = 0
    sent: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    opted_out: int = Field(default=0, description="Not sent: the client opted out first.")
    total: int = 0

    @classmethod
    def of(cls, counts: dict[str, int]) -> "StatusCounts":
        return cls(**counts, total=sum(counts.values()))


class DispatchStats(BaseModel):
    """One dispatch's messages counted by status."""

    dispatch_id: int
    status: DispatchStatus
    messages: StatusCounts


class OverallStats(BaseModel):
    """Every dispatch with its message counts, and the totals over all of them."""

    dispatches: list[DispatchStats]
    totals: StatusCounts
    dispatch_count: int
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page of dispatches."
    )


class AudienceCount(BaseModel):
    """How many clients a dispatch with this filter would target now."""

    clients: int = Field(description="Matching clients, the stop list left out.")
    operator_codes: list[str]
    tags: list[str]


class TimelinePoint(BaseModel):
    at: datetime = Field(description="Start of the bucket (UTC).")
    sent: int


class RemoteHealth(BaseModel):
    """The remote's error rate over the last `hours`."""

    hours: int
    attempts: int = Field(description="Requests made for the messages that changed meanwhile.")
    sent: int
    failed: int = Field(description="Messages the remote refused for good.")
    error_rate: float | None = Field(
        description="Share of those requests that did not end in `sent` (null without any)."
    )


class FailureReason(BaseModel):
    status: MessageStatus
    reason: str
    count: int
