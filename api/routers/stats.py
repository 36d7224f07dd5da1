from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.auth import guarded
from api.deps import SessionDep, SettingsDep
from api.paging import PagingDep
from api.schemas.common import FILTER_MAX_ITEMS, NO_NUL, OperatorCode, Tag
from api.schemas.statistics import AudienceCount, OverallStats, RemoteHealth, TimelinePoint
from api.services import statistics as statistics_service
from core.auth import Permission
from core.models import TEXT_MAX_LENGTH, utcnow

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=OverallStats, **guarded(Permission.DISPATCHES_READ))
async def overall_stats(
    session: SessionDep,
    paging: PagingDep,
    settings: SettingsDep,
) -> OverallStats:
    """Every dispatch (a page of them, by id) with its messages counted by status and by send
    route, and the totals over all messages; with the messages still `sent` RECEIPT_WAIT_HOURS
    after their send (no receipt came in time)."""
    return await statistics_service.overall_stats(
        session=session,
        paging=paging,
        receipt_wait=timedelta(hours=settings.receipt_wait_hours),
    )


@router.get("/audience", response_model=AudienceCount, **guarded(Permission.DISPATCHES_READ))
async def audience(
    session: SessionDep,
    settings: SettingsDep,
    operator_code: Annotated[list[OperatorCode], Query(max_length=FILTER_MAX_ITEMS)] = [],  # noqa: B006
    tag: Annotated[list[Tag], Query(max_length=FILTER_MAX_ITEMS)] = [],  # noqa: B006
    text: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=TEXT_MAX_LENGTH,
            pattern=NO_NUL,
            description="A dispatch's text: the answer adds its encoding and SMS parts.",
        ),
    ] = None,
    normalize_text: Annotated[
        bool,
        Query(description="Measure the text as `normalize_text: true` would store it."),
    ] = False,
) -> AudienceCount:
    """How many clients a dispatch with this filter (repeat `tag` and `operator_code`; none of
    either: every client) would target now, before creating it, and with a `text`, in how many
    SMS parts each (a text over MAX_SEGMENTS is measured, not refused). The stop list is left
    out."""
    return await statistics_service.audience_count(
        session=session,
        operator_codes=operator_code,
        tags=tag,
        text=text,
        normalize_text=normalize_text,
        max_segments=settings.max_segments,
    )


@router.get("/timeline", response_model=list[TimelinePoint], **guarded(Permission.DISPATCHES_READ))
async def timeline(
    session: SessionDep,
    hours: Annotated[int, Query(ge=1, le=24 * 31)] = 72,
    bucket: Literal["hour", "minute"] = "hour",
) -> list[TimelinePoint]:
    """Messages sent per hour (or minute) over the last `hours`, every dispatch together."""
    since = utcnow() - timedelta(hours=hours)
    return await statistics_service.timeline(
        session=session, dispatch_id=None, since=since, bucket=bucket
    )


@router.get("/remote", response_model=RemoteHealth, **guarded(Permission.DISPATCHES_READ))
async def remote(
    session: SessionDep, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24
) -> RemoteHealth:
    """The remote API's error rate over the last `hours`: of the requests made for the
    messages that changed meanwhile, the share that did not end in `sent`."""
    return await statistics_service.remote_health(session=session, hours=hours)
