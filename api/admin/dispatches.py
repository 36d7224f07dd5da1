"""The dispatch pages: the list, a dispatch's page with its live part, its test sends, and the
control commands. Mirrors api/routers/dispatches.py and dispatch_tests.py; the form (new and
edit) is in `dispatch_form`, included first: these routes take an id or a command in the place
of `new` and `edit`.

A dispatch's page polls its live part while it may send; the answer replaces the counts, and,
out of band, the charts' data (their canvases stay, so a hover survives), the cohorts, the
failures and the messages table (as filtered and paged), and the commands only when the status
changed (a reason being typed is not wiped). The cohorts, which the workflow's workers answer
for, load apart (`/progress`, every 10 s while it may send): neither the page nor its live part
waits for a worker."""

from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.admin.charts import by_route, sends_over_time
from api.admin.common import (
    PAGE_SIZE,
    FormField,
    SessionUser,
    admin_router,
    back,
    error_status,
    finished_messages,
    form_errors,
    render,
    split_list,
    zone_of,
)
from api.admin.session import AdminSession, check_csrf
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.paging import Paging, decode_cursor
from api.schemas.statistics import RouteStats
from api.schemas.test_sends import TestSendCreate
from api.services import common as common_service
from api.services import control as control_service
from api.services import dispatches as dispatches_service
from api.services import messages as messages_service
from api.services import progress as progress_service
from api.services import statistics as statistics_service
from api.services import test_sends as test_sends_service
from core.auth import Permission
from core.control import Command
from core.errors import Conflict, NotFound
from core.models import (
    CONTROL_REASON_MAX_LENGTH,
    ROUTE_NAME_MAX_LENGTH,
    UNFINISHED_DISPATCH_STATUSES,
    DispatchStatus,
    MessageStatus,
    utcnow,
)
from core.settings import Settings
from core.stats import route_counts_by_dispatch, without_receipt_by_dispatch

router = admin_router()

# What a pause, a resume and a cancel did, for the notice that says so.
DONE = {Command.PAUSE: "paused", Command.RESUME: "resumed", Command.CANCEL: "cancelled"}
TEST_FIELDS = {"phones": FormField("Numbers", "phones")}

# The test messages a dispatch's page shows, newest first.
TESTS_SHOWN = 20


@router.get("/dispatches")
async def dispatches(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    status: DispatchStatus | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_READ)
    after_id = None if not cursor else decode_cursor(cursor)
    page = await dispatches_service.list_dispatches(
        session=db,
        status=status,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
    )
    no_receipt = await without_receipt_by_dispatch(
        session=db,
        dispatch_ids=[d.id for d in page.items],
        sent_before=utcnow() - timedelta(hours=settings.receipt_wait_hours),
    )
    next_url = None
    if page.next_cursor:
        query = {"cursor": page.next_cursor} | ({"status": status.value} if status else {})
        next_url = "/admin/dispatches?" + urlencode(query)
    return render(
        request,
        "dispatches.html",
        session,
        page=page,
        no_receipt={dispatch_id: sum(n.values()) for dispatch_id, n in no_receipt.items()},
        status=status,
        statuses=list(DispatchStatus),
        next_url=next_url,
    )


async def _dispatch_view(
    db: AsyncSession,
    dispatch_id: int,
    status: MessageStatus | None,
    cursor: str | None,
    route: str | None = None,
    *,
    receipt_wait_hours: float,
    zone: str,
) -> dict[str, Any]:
    """What a dispatch's page and its live part show, every number read as the API reads it."""
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = await dispatches_service.dispatch_with_counts(session=db, dispatch=dispatch)
    no_receipt = await without_receipt_by_dispatch(
        session=db,
        dispatch_ids=[dispatch_id],
        sent_before=utcnow() - timedelta(hours=receipt_wait_hours),
    )
    routes = RouteStats.of(
        (await route_counts_by_dispatch(session=db, dispatch_ids=[dispatch_id]))[dispatch_id],
        no_receipt[dispatch_id],
    )
    points = await statistics_service.timeline(
        session=db, dispatch_id=dispatch_id, since=dispatch.created_at, bucket="minute"
    )
    after_id = None if not cursor else decode_cursor(cursor)
    messages = await messages_service.list_messages(
        session=db,
        dispatch_id=dispatch_id,
        status=status,
        route=route,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
    )
    next_url = None
    if messages.next_cursor:
        query = {"cursor": messages.next_cursor} | ({"status": status.value} if status else {})
        query |= {"route": route} if route else {}
        next_url = f"/admin/dispatches/{dispatch_id}?" + urlencode(query)
    return {
        "dispatch": public,
        "charts": [
            sends_over_time(points, id="per-minute", bucket="minute", zone=zone, now=utcnow()),
            by_route(routes, id="per-route"),
        ],
        "failures": await statistics_service.failure_reasons(session=db, dispatch_id=dispatch_id),
        "messages": messages,
        "message_status": status,
        "message_route": route,
        "message_cursor": cursor,
        "next_url": next_url,
        "live": dispatch.status in UNFINISHED_DISPATCH_STATUSES,
        "done": finished_messages(public.messages),
        "no_receipt": sum(no_receipt[dispatch_id].values()),
        "receipt_wait_hours": receipt_wait_hours,
    }


def _live_url(
    dispatch_id: int, status: MessageStatus | None, route: str, cursor: str | None
) -> str:
    """The live part's address, with the messages table's filter and page."""
    query = {"status": status.value if status else "", "route": route, "cursor": cursor or ""}
    kept = {key: value for key, value in query.items() if value}
    return f"/admin/dispatches/{dispatch_id}/live" + ("?" + urlencode(kept) if kept else "")


@router.get("/dispatches/{dispatch_id}")
async def dispatch_page(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    status: MessageStatus | None = None,
    route: str = "",
    cursor: str | None = None,
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_READ)
    return await _page(
        request,
        session,
        db,
        settings,
        dispatch_id,
        status=status,
        route=route,
        cursor=cursor,
    )


async def _page(
    request: Request,
    session: AdminSession,
    db: AsyncSession,
    settings: Settings,
    dispatch_id: int,
    *,
    status: MessageStatus | None = None,
    route: str = "",
    cursor: str | None = None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """A dispatch's page; `extra` is what a test send adds (its results or errors)."""
    route = route[:ROUTE_NAME_MAX_LENGTH]
    view = await _dispatch_view(
        db,
        dispatch_id,
        status,
        cursor,
        route or None,
        receipt_wait_hours=settings.receipt_wait_hours,
        zone=zone_of(request),
    )
    temporal_url = (
        f"{settings.temporal_ui}/namespaces/{settings.temporal_namespace}/workflows?query="
        + quote(f"DispatchId = {dispatch_id}")
    )
    tests = await test_sends_service.list_tests(
        session=db, dispatch_id=dispatch_id, limit=TESTS_SHOWN
    )
    return render(
        request,
        "dispatch.html",
        session,
        status_code=status_code,
        **view,
        temporal_url=temporal_url,
        statuses=list(MessageStatus),
        routes=[r.name for r in settings.routes],
        dispatch_id=dispatch_id,
        live_url=_live_url(dispatch_id, status, route, cursor),
        tests=tests,
        **extra,
    )


@router.get("/dispatches/{dispatch_id}/live")
async def dispatch_live(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    status: MessageStatus | None = None,
    route: str = "",
    cursor: str | None = None,
    shown: str = "",
) -> HTMLResponse:
    """htmx: the live part of a dispatch's page, polled every 2 s while it may still send, with
    the rest that changes out of band; `shown` is the status the page's commands are for."""
    session.require(Permission.DISPATCHES_READ)
    route = route[:ROUTE_NAME_MAX_LENGTH]
    view = await _dispatch_view(
        db,
        dispatch_id,
        status,
        cursor,
        route or None,
        receipt_wait_hours=settings.receipt_wait_hours,
        zone=zone_of(request),
    )
    return render(
        request,
        "_live.html",
        session,
        **view,
        oob=True,
        controls_changed=shown != view["dispatch"].status.value,
        live_url=_live_url(dispatch_id, status, route, cursor),
    )


@router.get("/dispatches/{dispatch_id}/progress")
async def dispatch_progress(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> HTMLResponse:
    """htmx: the cohorts of a dispatch's page, its workflow's account: asked apart, and through
    the API process's ProgressCache, so that neither the page nor its watchers wait for a busy
    or restarting worker but the first time."""
    session.require(Permission.DISPATCHES_READ)
    await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    cache: progress_service.ProgressCache | None = getattr(request.app.state, "progress", None)
    if cache is None or cache.temporal is not temporal:
        cache = request.app.state.progress = progress_service.ProgressCache(temporal)
    asked_at, progress = await cache.get(dispatch_id)
    return render(request, "_progress.html", session, progress=progress, asked_at=asked_at)


@router.get("/dispatches/{dispatch_id}/tests")
async def dispatch_tests(
    request: Request, dispatch_id: int, session: SessionUser, db: SessionDep
) -> HTMLResponse:
    """htmx: the dispatch's recent test messages, polled every 2 s while one is pending."""
    session.require(Permission.DISPATCHES_READ)
    tests = await test_sends_service.list_tests(
        session=db, dispatch_id=dispatch_id, limit=TESTS_SHOWN
    )
    return render(request, "_tests.html", session, dispatch_id=dispatch_id, tests=tests)


# Before the commands' route, which would take `test` for a command.
@router.post("/dispatches/{dispatch_id}/test")
async def send_test(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The dispatch's text to the numbers of the form now, as POST /dispatches/{id}/test; the
    page again, with what became of each number."""
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    form = await request.form()
    typed = str(form.get("phones", ""))
    phones = split_list(typed.replace("\n", ","))
    try:
        data = TestSendCreate(phones=phones)
        results = await test_sends_service.send_tests(
            session=db,
            temporal=temporal,
            settings=settings,
            dispatch_id=dispatch_id,
            phones=data.phones,
            actor=session.principal.subject,
        )
    except (ValidationError, Conflict) as error:
        return await _page(
            request,
            session,
            db,
            settings,
            dispatch_id,
            status_code=error_status(error),
            test_phones=typed,
            test_errors=form_errors(error, TEST_FIELDS),
        )
    return await _page(request, session, db, settings, dispatch_id, test_results=results)


@router.post("/dispatches/{dispatch_id}/{command}")
async def control(
    request: Request,
    dispatch_id: int,
    command: str,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> Response:
    if command not in {c.value for c in Command}:
        raise NotFound("page", dispatch_id)
    session.require(Permission.DISPATCHES_CONTROL)
    await check_csrf(request, session)
    form = await request.form()
    reason = str(form.get("reason", "")).strip()[:CONTROL_REASON_MAX_LENGTH] or None
    try:
        await control_service.control_dispatch(
            session=db,
            temporal=temporal,
            dispatch_id=dispatch_id,
            command=Command(command),
            reason=reason,
            update_wait=timedelta(seconds=settings.control_timeout_seconds),
            actor=session.principal.subject,
        )
    except Conflict as error:
        return back(
            f"/admin/dispatches/{dispatch_id}",
            f"Dispatch {dispatch_id} was not {DONE[Command(command)]}: {error}.",
        )
    why = f": {reason}" if reason else ""
    return back(
        f"/admin/dispatches/{dispatch_id}",
        f"Dispatch {dispatch_id} {DONE[Command(command)]}{why}.",
    )
