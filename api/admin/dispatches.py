"""The dispatch pages: the list, a dispatch's form (new and edit) with its audience preview, its
page with the live part, and the control commands. Mirrors api/routers/dispatches.py; `new`
and `edit` come before the routes that take an id or a command in their place."""

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.admin.charts import bar_chart
from api.admin.common import (
    PAGE_SIZE,
    SessionUser,
    admin_router,
    back,
    error_status,
    finished_messages,
    form_errors,
    render,
    split_list,
)
from api.admin.session import AdminSession, check_csrf
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.errors import ErrorItem
from api.paging import Paging, decode_cursor
from api.schemas.common import FILTER_MAX_ITEMS
from api.schemas.dispatches import DispatchCreate, DispatchUpdate
from api.services import common as common_service
from api.services import control as control_service
from api.services import dispatches as dispatches_service
from api.services import messages as messages_service
from api.services import statistics as statistics_service
from core.auth import Permission
from core.contracts.shared import DeliveryShape
from core.control import Command
from core.errors import Conflict, DomainError, NotFound
from core.models import (
    CONTROL_REASON_MAX_LENGTH,
    EDITABLE_WHILE_RUNNING,
    UNFINISHED_DISPATCH_STATUSES,
    DispatchStatus,
    MessageStatus,
    utcnow,
)
from core.windows import RUSSIA_ZONES

router = admin_router()

# The zones the form offers to read and show its times in; it starts in the service's default
# zone (DEFAULT_TIMEZONE), offered too when it is none of these.
FORM_ZONES = (*RUSSIA_ZONES, "UTC")


@router.get("/dispatches")
async def dispatches(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    status: DispatchStatus | None = None,
    cursor: str | None = None,
    notice: str = "",
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_READ)
    after_id = None if not cursor else decode_cursor(cursor)
    page = await dispatches_service.list_dispatches(
        session=db,
        status=status,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
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
        status=status,
        statuses=list(DispatchStatus),
        next_url=next_url,
        notice=notice,
    )


def _local_input(value: datetime, zone: str) -> str:
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def _dispatch_defaults(zone: str) -> dict[str, Any]:
    start = utcnow() + timedelta(minutes=1)
    return {
        "start_at": _local_input(start, zone),
        "end_at": _local_input(start + timedelta(days=1), zone),
        "zone": zone,
        "text": "",
        "tags": "",
        "codes": "",
        "all": False,
        "window_start": "",
        "window_end": "",
        "delivery": DeliveryShape.COHORTS.value,
    }


def _dispatch_form_page(
    request: Request,
    session: AdminSession,
    values: dict[str, Any],
    errors: list[ErrorItem],
    dispatch: Any,
    default_zone: str,
    status_code: int = 200,
) -> HTMLResponse:
    """The dispatch form: a new one (`dispatch` None) or an edit, with the errors it met."""
    zones = FORM_ZONES if default_zone in FORM_ZONES else (default_zone, *FORM_ZONES)
    return render(
        request,
        "dispatch_form.html",
        session,
        status_code,
        values=values,
        errors=errors,
        zones=zones,
        dispatch=dispatch,
    )


def _dispatch_form(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: str(form.get(name, "")).strip()
        for name in (
            "start_at",
            "end_at",
            "zone",
            "tags",
            "codes",
            "window_start",
            "window_end",
            "delivery",
        )
    }
    values["text"] = str(form.get("text", ""))
    values["all"] = form.get("all") == "on"
    return values


def _instant(local: str, zone: str) -> str | None:
    """A datetime-local value read in `zone`, as ISO 8601 with its offset (None if empty)."""
    if not local:
        return None
    try:
        naive = datetime.fromisoformat(local)
        return naive.replace(tzinfo=ZoneInfo(zone or "UTC")).isoformat()
    except (ValueError, KeyError):
        return local  # the model names what is wrong with it


def _dispatch_body(values: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_at": _instant(values["start_at"], values["zone"]),
        "end_at": _instant(values["end_at"], values["zone"]),
        "text": values["text"],
        "filter": {
            "tags": split_list(values["tags"]),
            "operator_codes": split_list(values["codes"]),
            "all": values["all"],
        },
        "delivery": values["delivery"] or DeliveryShape.COHORTS.value,
    }
    if values["window_start"] or values["window_end"]:
        body["window"] = {"start": values["window_start"], "end": values["window_end"]}
    return body


@router.get("/dispatches/new")
async def new_dispatch(
    request: Request, session: SessionUser, settings: SettingsDep
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    zone = settings.default_timezone
    return _dispatch_form_page(request, session, _dispatch_defaults(zone), [], None, zone)


@router.get("/audience")
async def audience_preview(
    request: Request, session: SessionUser, db: SessionDep, tags: str = "", codes: str = ""
) -> HTMLResponse:
    """htmx: how many clients the form's filter matches now."""
    session.require(Permission.DISPATCHES_READ)
    count = await statistics_service.audience_count(
        session=db,
        operator_codes=split_list(codes)[:FILTER_MAX_ITEMS],
        tags=split_list(tags)[:FILTER_MAX_ITEMS],
    )
    return render(request, "_audience.html", session, count=count)


@router.post("/dispatches")
async def create_dispatch(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    values = _dispatch_form(await request.form())
    try:
        data = DispatchCreate.model_validate(_dispatch_body(values))
        dispatch, _ = await dispatches_service.create_dispatch(
            session=db,
            temporal=temporal,
            settings=settings,
            data=data,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request,
            session,
            values,
            form_errors(error),
            None,
            settings.default_timezone,
            error_status(error),
        )
    return back(f"/admin/dispatches/{dispatch.id}", "dispatch created")


async def _dispatch_view(
    db: Any, temporal: Any, dispatch_id: int, status: MessageStatus | None, cursor: str | None
) -> dict[str, Any]:
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = await dispatches_service.dispatch_with_counts(session=db, dispatch=dispatch)
    points = await statistics_service.timeline(
        session=db, dispatch_id=dispatch_id, since=dispatch.created_at, bucket="minute"
    )
    chart = bar_chart(
        [(point.at.strftime("%H:%M"), point.sent) for point in points],
        title="Messages sent per minute (UTC)",
    )
    after_id = None if not cursor else decode_cursor(cursor)
    messages = await messages_service.list_messages(
        session=db,
        dispatch_id=dispatch_id,
        status=status,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
    )
    return {
        "dispatch": public,
        "chart": chart,
        "progress": await dispatches_service.dispatch_progress(
            temporal=temporal, dispatch_id=dispatch_id
        ),
        "failures": await statistics_service.failure_reasons(session=db, dispatch_id=dispatch_id),
        "messages": messages,
        "message_status": status,
        "live": dispatch.status in UNFINISHED_DISPATCH_STATUSES,
        "done": finished_messages(public.messages),
    }


@router.get("/dispatches/{dispatch_id}")
async def dispatch_page(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    status: MessageStatus | None = None,
    cursor: str | None = None,
    notice: str = "",
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_READ)
    view = await _dispatch_view(db, temporal, dispatch_id, status, cursor)
    next_url = None
    if view["messages"].next_cursor:
        query = {"cursor": view["messages"].next_cursor} | ({"status": status} if status else {})
        next_url = f"/admin/dispatches/{dispatch_id}?" + urlencode(query)
    temporal_url = (
        f"{settings.temporal_ui}/namespaces/{settings.temporal_namespace}/workflows?query="
        + quote(f"DispatchId = {dispatch_id}")
    )
    return render(
        request,
        "dispatch.html",
        session,
        **view,
        notice=notice,
        next_url=next_url,
        temporal_url=temporal_url,
        statuses=list(MessageStatus),
    )


@router.get("/dispatches/{dispatch_id}/live")
async def dispatch_live(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> HTMLResponse:
    """htmx: the live part of a dispatch's page, polled every 2 s while it may still send."""
    session.require(Permission.DISPATCHES_READ)
    view = await _dispatch_view(db, temporal, dispatch_id, None, None)
    return render(request, "_live.html", session, **view)


@router.get("/dispatches/{dispatch_id}/edit")
async def edit_dispatch(
    request: Request, dispatch_id: int, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = dispatches_service.dispatch_public(dispatch, {})
    zone = settings.default_timezone
    values = _dispatch_defaults(zone)
    values.update(
        start_at=_local_input(dispatch.start_at, zone),
        end_at=_local_input(dispatch.end_at, zone),
        text=dispatch.text,
        tags=", ".join(dispatch.tags),
        codes=", ".join(dispatch.operator_codes),
        all=dispatch.target_all,
        window_start=public.window.start if public.window else "",
        window_end=public.window.end if public.window else "",
        delivery=dispatch.delivery,
    )
    return _dispatch_form_page(request, session, values, [], public, zone)


@router.post("/dispatches/{dispatch_id}/edit")
async def update_dispatch(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> Response:
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    dispatch = await common_service.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = dispatches_service.dispatch_public(dispatch, {})
    values = _dispatch_form(await request.form())
    body = _dispatch_body(values)
    if dispatch.status != DispatchStatus.SCHEDULED:
        # A running or paused dispatch edits only what the workflows read again.
        body = {key: value for key, value in body.items() if key in EDITABLE_WHILE_RUNNING}
    try:
        data = DispatchUpdate.model_validate(body)
        await dispatches_service.update_dispatch(
            session=db,
            temporal=temporal,
            dispatch_id=dispatch_id,
            data=data,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request,
            session,
            values,
            form_errors(error),
            public,
            settings.default_timezone,
            error_status(error),
        )
    return back(f"/admin/dispatches/{dispatch_id}", "saved")


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
        return back(f"/admin/dispatches/{dispatch_id}", f"not done: {error}")
    return back(f"/admin/dispatches/{dispatch_id}", f"{command} done")
