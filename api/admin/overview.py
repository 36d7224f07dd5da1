"""The overview, /admin: every message counted by status (the delivered share, and those with no
receipt in time), charts of the sends per hour over the last 72 hours, of the delivered share of
each hour's sends (once receipts came) and of the remote's error rate over the last day, each
send route's health (and its messages with no receipt in time), the dispatches running now.

And the zone the pages show times in (/admin/zone): the operator picks it once, a cookie keeps
it."""

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from api.admin.charts import delivered_share, error_rate, sends_over_time
from api.admin.common import (
    OTHER_ZONES,
    ZONE_COOKIE,
    SessionUser,
    admin_router,
    back,
    known_zone,
    render,
    zone_of,
)
from api.admin.session import check_csrf
from api.deps import SessionDep, SettingsDep
from api.paging import Paging
from api.schemas.statistics import StatusCounts
from api.services import dispatches as dispatches_service
from api.services import routes as routes_service
from api.services import statistics as statistics_service
from core.auth import Permission
from core.models import DispatchStatus, utcnow
from core.stats import total_counts, total_without_receipt
from core.windows import RUSSIA_ZONES

router = admin_router()

# The overview's spans: sends and their receipts, and the remote's requests.
SENDS_HOURS = 72
REMOTE_HOURS = 24
# The zone's cookie lives a year: a preference, not a session.
ZONE_COOKIE_SECONDS = 365 * 24 * 3600


@router.get("")
async def overview(
    request: Request, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> Response:
    if not session.can(Permission.DISPATCHES_READ) and session.can(Permission.CLIENTS_READ):
        return back("/admin/clients")
    session.require(Permission.DISPATCHES_READ)
    zone = zone_of(request)
    now = utcnow()
    totals = await total_counts(session=db)
    no_receipt = await total_without_receipt(
        session=db, sent_before=now - timedelta(hours=settings.receipt_wait_hours)
    )
    since = now - timedelta(hours=SENDS_HOURS)
    hourly = await statistics_service.timeline(
        session=db, dispatch_id=None, since=since, bucket="hour"
    )
    health = await statistics_service.remote_health(session=db, hours=REMOTE_HOURS)
    requests = await statistics_service.remote_health_by_hour(session=db, hours=REMOTE_HOURS)
    deliveries = await statistics_service.deliveries_by_hour(session=db, since=since)
    running = await dispatches_service.list_dispatches(
        session=db,
        status=DispatchStatus.RUNNING,
        paging=Paging(limit=10, offset=0, after_id=None, with_total=True),
    )
    share = delivered_share(deliveries, id="delivered-share", zone=zone, since=since, now=now)
    charts = [
        sends_over_time(hourly, id="per-hour", bucket="hour", zone=zone, now=now, since=since),
        *([share] if share else []),
        error_rate(
            requests,
            id="error-rate",
            zone=zone,
            since=now - timedelta(hours=REMOTE_HOURS),
            now=now,
        ),
    ]
    return render(
        request,
        "overview.html",
        session,
        totals=totals,
        counts_public=StatusCounts.of(totals),
        total=sum(totals.values()),
        no_receipt=no_receipt,
        no_receipt_total=sum(no_receipt.values()),
        receipt_wait_hours=settings.receipt_wait_hours,
        charts=charts,
        health=health,
        routes=await routes_service.list_routes(session=db, routes=settings.routes),
        running=running,
    )


def _local_path(path: str) -> str:
    """Where to go back to: a page of the admin, never elsewhere."""
    return path if path.startswith("/admin") and not path.startswith("//") else "/admin"


@router.get("/zone")
async def zone_page(request: Request, session: SessionUser, next: str = "/admin") -> HTMLResponse:
    """The zone every page shows its times in: any IANA zone, Russia's first."""
    return render(
        request,
        "zone.html",
        session,
        russia_zones=RUSSIA_ZONES,
        other_zones=("UTC", *OTHER_ZONES),
        next=_local_path(next),
    )


@router.post("/zone")
async def choose_zone(
    request: Request,
    session: SessionUser,
    zone: Annotated[str, Form(max_length=64)],
    next: Annotated[str, Form(max_length=2000)] = "/admin",
) -> Response:
    """Keeps the zone in a cookie and goes back to the page it was picked from."""
    await check_csrf(request, session)
    if not known_zone(zone):
        return back(f"/admin/zone?next={quote(_local_path(next))}", f"{zone} is not a time zone.")
    response = back(_local_path(next), f"Times are now shown in {zone}.")
    response.set_cookie(
        ZONE_COOKIE,
        zone,
        max_age=ZONE_COOKIE_SECONDS,
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response
