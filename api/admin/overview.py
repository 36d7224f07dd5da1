"""The overview, /admin: every message counted by status (the delivered share, and those with no
receipt in time), sends per hour over the last 72 hours, the remote's error rate, each send
route's health (and its messages with no receipt in time), the dispatches running now."""

from datetime import timedelta

from fastapi import Request
from fastapi.responses import Response

from api.admin.charts import bar_chart
from api.admin.common import SessionUser, admin_router, back, render
from api.deps import SessionDep, SettingsDep
from api.paging import Paging
from api.schemas.statistics import StatusCounts
from api.services import dispatches as dispatches_service
from api.services import routes as routes_service
from api.services import statistics as statistics_service
from core.auth import Permission
from core.models import DispatchStatus, utcnow
from core.stats import total_counts, total_without_receipt

router = admin_router()


@router.get("")
async def overview(
    request: Request, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> Response:
    if not session.can(Permission.DISPATCHES_READ) and session.can(Permission.CLIENTS_READ):
        return back("/admin/clients")
    session.require(Permission.DISPATCHES_READ)
    totals = await total_counts(session=db)
    no_receipt = await total_without_receipt(
        session=db, sent_before=utcnow() - timedelta(hours=settings.receipt_wait_hours)
    )
    since = utcnow() - timedelta(hours=72)
    hourly = await statistics_service.timeline(
        session=db, dispatch_id=None, since=since, bucket="hour"
    )
    health = await statistics_service.remote_health(session=db, hours=24)
    running = await dispatches_service.list_dispatches(
        session=db,
        status=DispatchStatus.RUNNING,
        paging=Paging(limit=10, offset=0, after_id=None, with_total=True),
    )
    chart = bar_chart(
        [(point.at.strftime("%d %H:00"), point.sent) for point in hourly],
        title="Messages sent per hour, last 72 hours (UTC)",
    )
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
        chart=chart,
        health=health,
        routes=await routes_service.list_routes(session=db, routes=settings.routes),
        running=running,
    )
