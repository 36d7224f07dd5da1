"""The admin pages and their actions. Reads and writes go through api.services and api.insights,
the same functions the JSON API calls, with the signed-in user's permissions."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api import insights, services
from api.admin.charts import bar_chart
from api.admin.session import (
    AdminSession,
    check_csrf,
    check_origin,
    clear_session,
    current_session,
    set_session,
)
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.errors import ErrorItem
from api.imports import FileFormat, FileRefused, Importer, OnDuplicate, OnError, format_of
from api.paging import Paging, decode_cursor
from api.schemas import ClientCreate, ClientUpdate, DispatchCreate, DispatchUpdate
from core.auth import Permission, Unauthenticated, Verifier
from core.control import Command
from core.errors import Conflict, DomainError, NotFound
from core.models import (
    TEXT_MAX_LENGTH,
    UNFINISHED_DISPATCH_STATUSES,
    DispatchStatus,
    MessageStatus,
    utcnow,
)
from core.stats import total_counts
from core.windows import RUSSIA_ZONES

router = APIRouter(prefix="/admin", include_in_schema=False, default_response_class=HTMLResponse)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(
    Permission=Permission,
    MessageStatus=MessageStatus,
    TEXT_MAX_LENGTH=TEXT_MAX_LENGTH,
)

SessionUser = Annotated[AdminSession, Depends(current_session)]
PAGE_SIZE = 50
# The zone the forms read and show times in, unless the user picks another.
FORM_ZONES = (*RUSSIA_ZONES, "UTC")


def render(
    request: Request,
    name: str,
    session: AdminSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"session": session, **context}, status_code=status_code
    )


def back(url: str, notice: str | None = None) -> RedirectResponse:
    if notice:
        url += ("&" if "?" in url else "?") + "notice=" + quote(notice)
    return RedirectResponse(url, status_code=303)


def _errors(error: Exception) -> list[ErrorItem]:
    """A refused form's errors, by field: the model's, or a domain error's message."""
    if isinstance(error, ValidationError):
        return [ErrorItem.of_validation(item) for item in error.errors()]
    field = "phone" if isinstance(error, Conflict) and "phone" in str(error) else None
    return [ErrorItem(field, str(error))]


def _status_of(error: Exception) -> int:
    return 409 if isinstance(error, Conflict) else 422


# Sign in and out


@router.get("/login")
async def login_page(request: Request, reason: str = "") -> HTMLResponse:
    verifier: Verifier = request.app.state.verifier
    return render(
        request,
        "login.html",
        None,
        reason=reason,
        provider=verifier.oidc is not None,
    )


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=20_000)]) -> Response:
    """The embedded mode: a token from `make token`, checked as the API checks it."""
    check_origin(request)
    verifier: Verifier = request.app.state.verifier
    token = token.strip().removeprefix("Bearer ").strip()
    try:
        await verifier.verify(token)
    except Unauthenticated as error:
        return render(
            request,
            "login.html",
            None,
            status_code=401,
            reason=f"not signed in: {error}",
            provider=verifier.oidc is not None,
        )
    response = back("/admin")
    set_session(response, token, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionUser) -> Response:
    await check_csrf(request, session)
    response = back("/admin/login", "signed out")
    clear_session(response)
    return response


# Overview


@router.get("")
async def overview(request: Request, session: SessionUser, db: SessionDep) -> Response:
    if not session.can(Permission.DISPATCHES_READ) and session.can(Permission.CLIENTS_READ):
        return back("/admin/clients")
    session.require(Permission.DISPATCHES_READ)
    totals = await total_counts(session=db)
    since = utcnow() - timedelta(hours=72)
    hourly = await insights.timeline(session=db, dispatch_id=None, since=since, bucket="hour")
    health = await insights.remote_health(session=db, hours=24)
    running = await services.list_dispatches(
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
        total=sum(totals.values()),
        chart=chart,
        health=health,
        running=running,
    )


# Clients


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


@router.get("/clients")
async def clients(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    tags: str = "",
    codes: str = "",
    zones: str = "",
    phone: str = "",
    cursor: str | None = None,
    notice: str = "",
) -> HTMLResponse:
    session.require(Permission.CLIENTS_READ)
    filters = {"tags": tags, "codes": codes, "zones": zones, "phone": phone}
    error = None
    prefix = "".join(ch for ch in phone if ch.isdigit())[:11] or None
    try:
        after_id = None if not cursor else decode_cursor(cursor)
    except DomainError as bad:
        after_id, error = None, str(bad)
    paging = Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True)
    rows, total, next_cursor = await services.list_clients(
        session=db,
        tags=_split(tags),
        operator_codes=_split(codes),
        timezones=_split(zones),
        phone_prefix=prefix,
        opted_out=None,
        paging=paging,
    )
    query = {key: value for key, value in filters.items() if value}
    next_url = None
    if next_cursor:
        next_url = "/admin/clients?" + urlencode({**query, "cursor": next_cursor})
    return render(
        request,
        "clients.html",
        session,
        clients=rows,
        total=total,
        filters=filters,
        next_url=next_url,
        first_url="/admin/clients?" + urlencode(query),
        paged=cursor is not None,
        notice=notice,
        error=error,
    )


@router.get("/clients/new")
async def new_client(request: Request, session: SessionUser) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    return _client_form_page(request, session, {}, [], None)


def _client_form_page(
    request: Request,
    session: AdminSession,
    values: dict[str, Any],
    errors: list[ErrorItem],
    client: Any,
    status_code: int = 200,
) -> HTMLResponse:
    """The client form: a new one (`client` None) or an edit, with the errors it met."""
    return render(
        request,
        "client_form.html",
        session,
        status_code,
        client=client,
        values=values,
        errors=errors,
    )


def _client_form(form: Any) -> dict[str, Any]:
    values = {
        name: str(form.get(name, "")).strip()
        for name in ("phone", "tag", "timezone", "operator_code")
    }
    values["opted_out"] = form.get("opted_out") == "on"
    return values


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value != "" or key == "tag"}


@router.get("/clients/import")
async def import_page(request: Request, session: SessionUser) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    return render(request, "import.html", session, report=None, error=None)


@router.post("/clients/import")
async def import_clients(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    settings: SettingsDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    # Parsed with its limits first: the CSRF check then reads the same form.
    form = await request.form(max_files=1, max_fields=10)
    await check_csrf(request, session)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return render(request, "import.html", session, 422, report=None, error="choose a file")
    file_format = format_of(upload.content_type or "", upload.filename) or FileFormat.CSV
    try:
        on_duplicate = OnDuplicate(str(form.get("on_duplicate") or OnDuplicate.SKIP))
        on_error = OnError(str(form.get("on_error") or OnError.REJECT_FILE))
    except ValueError:
        return render(request, "import.html", session, 422, report=None, error="unknown option")
    importer = Importer(session=db, settings=settings, on_duplicate=on_duplicate, on_error=on_error)
    try:
        report = await importer.run(upload.file, file_format)
    except FileRefused as error:
        return render(request, "import.html", session, 422, report=None, error=str(error))
    for kind, dispatch_id, client_id in importer.to_wake:
        await services.wake_after_move(temporal, client_id, [(kind, dispatch_id)])
    return render(
        request,
        "import.html",
        session,
        200 if report.committed else 422,
        report=report,
        error=None,
    )


@router.post("/clients")
async def create_client(
    request: Request, session: SessionUser, db: SessionDep, settings: SettingsDep
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    values = _client_form(await request.form())
    try:
        data = ClientCreate.model_validate(_given(values))
        client = await services.create_client(session=db, data=data, settings=settings)
    except (ValidationError, Conflict) as error:
        return _client_form_page(request, session, values, _errors(error), None, _status_of(error))
    return back("/admin/clients", f"client {client.id} added")


@router.get("/clients/{client_id}/edit")
async def edit_client(
    request: Request, client_id: int, session: SessionUser, db: SessionDep
) -> HTMLResponse:
    session.require(Permission.CLIENTS_WRITE)
    client = await services.get_client(session=db, client_id=client_id)
    values = {
        "phone": client.phone,
        "tag": client.tag,
        "timezone": client.timezone,
        "operator_code": client.operator_code,
        "opted_out": client.opted_out,
    }
    return _client_form_page(request, session, values, [], client)


@router.post("/clients/{client_id}")
async def update_client(
    request: Request,
    client_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    client = await services.get_client(session=db, client_id=client_id)
    values = _client_form(await request.form())
    try:
        data = ClientUpdate.model_validate(_given(values))
        await services.update_client(session=db, temporal=temporal, client_id=client_id, data=data)
    except (ValidationError, Conflict) as error:
        return _client_form_page(
            request, session, values, _errors(error), client, _status_of(error)
        )
    return back("/admin/clients", f"client {client_id} saved")


@router.post("/clients/{client_id}/delete")
async def delete_client(
    request: Request,
    client_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.CLIENTS_WRITE)
    await check_csrf(request, session)
    await services.delete_client(session=db, temporal=temporal, client_id=client_id)
    return back("/admin/clients", f"client {client_id} deleted")


# Dispatches


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
    page = await services.list_dispatches(
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


def _dispatch_defaults(zone: str = "Europe/Moscow") -> dict[str, Any]:
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
        "delivery": "cohorts",
    }


def _dispatch_form_page(
    request: Request,
    session: AdminSession,
    values: dict[str, Any],
    errors: list[ErrorItem],
    dispatch: Any,
    status_code: int = 200,
) -> HTMLResponse:
    """The dispatch form: a new one (`dispatch` None) or an edit, with the errors it met."""
    return render(
        request,
        "dispatch_form.html",
        session,
        status_code,
        values=values,
        errors=errors,
        zones=FORM_ZONES,
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
            "tags": _split(values["tags"]),
            "operator_codes": _split(values["codes"]),
            "all": values["all"],
        },
        "delivery": values["delivery"] or "cohorts",
    }
    if values["window_start"] or values["window_end"]:
        body["window"] = {"start": values["window_start"], "end": values["window_end"]}
    return body


@router.get("/dispatches/new")
async def new_dispatch(request: Request, session: SessionUser) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    return _dispatch_form_page(request, session, _dispatch_defaults(), [], None)


@router.get("/audience")
async def audience_preview(
    request: Request, session: SessionUser, db: SessionDep, tags: str = "", codes: str = ""
) -> HTMLResponse:
    """htmx: how many clients the form's filter matches now."""
    session.require(Permission.DISPATCHES_READ)
    count = await insights.audience_count(
        session=db, operator_codes=_split(codes)[:100], tags=_split(tags)[:100]
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
        dispatch, _ = await services.create_dispatch(
            session=db,
            temporal=temporal,
            settings=settings,
            data=data,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request, session, values, _errors(error), None, _status_of(error)
        )
    return back(f"/admin/dispatches/{dispatch.id}", "dispatch created")


async def _dispatch_view(
    db: Any, temporal: Any, dispatch_id: int, status: MessageStatus | None, cursor: str | None
) -> dict[str, Any]:
    dispatch = await services.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = await services.dispatch_with_counts(session=db, dispatch=dispatch)
    points = await insights.timeline(
        session=db, dispatch_id=dispatch_id, since=dispatch.created_at, bucket="minute"
    )
    chart = bar_chart(
        [(point.at.strftime("%H:%M"), point.sent) for point in points],
        title="Messages sent per minute (UTC)",
    )
    after_id = None if not cursor else decode_cursor(cursor)
    messages = await services.list_messages(
        session=db,
        dispatch_id=dispatch_id,
        status=status,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
    )
    return {
        "dispatch": public,
        "chart": chart,
        "progress": await insights.dispatch_progress(temporal=temporal, dispatch_id=dispatch_id),
        "failures": await insights.failure_reasons(session=db, dispatch_id=dispatch_id),
        "messages": messages,
        "message_status": status,
        "live": dispatch.status in UNFINISHED_DISPATCH_STATUSES,
        "done": sum(
            public.messages.model_dump()[s]
            for s in ("sent", "failed", "expired", "cancelled", "opted_out")
        ),
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
    request: Request, dispatch_id: int, session: SessionUser, db: SessionDep
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_WRITE)
    dispatch = await services.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = services.dispatch_public(dispatch, {})
    values = _dispatch_defaults()
    values.update(
        start_at=_local_input(dispatch.start_at, "Europe/Moscow"),
        end_at=_local_input(dispatch.end_at, "Europe/Moscow"),
        text=dispatch.text,
        tags=", ".join(dispatch.tags),
        codes=", ".join(dispatch.operator_codes),
        all=dispatch.target_all,
        window_start=public.window.start if public.window else "",
        window_end=public.window.end if public.window else "",
        delivery=dispatch.delivery,
    )
    return _dispatch_form_page(request, session, values, [], public)


@router.post("/dispatches/{dispatch_id}/edit")
async def update_dispatch(
    request: Request,
    dispatch_id: int,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
) -> Response:
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    dispatch = await services.get_dispatch(session=db, dispatch_id=dispatch_id)
    public = services.dispatch_public(dispatch, {})
    values = _dispatch_form(await request.form())
    body = _dispatch_body(values)
    if dispatch.status != DispatchStatus.SCHEDULED:
        # A running dispatch edits its end, text and window only.
        body = {key: body[key] for key in ("end_at", "text") if key in body} | (
            {"window": body["window"]} if "window" in body else {}
        )
    try:
        data = DispatchUpdate.model_validate(body)
        await services.update_dispatch(
            session=db,
            temporal=temporal,
            dispatch_id=dispatch_id,
            data=data,
            actor=session.principal.subject,
        )
    except (ValidationError, DomainError) as error:
        return _dispatch_form_page(
            request, session, values, _errors(error), public, _status_of(error)
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
    reason = str(form.get("reason", "")).strip()[:200] or None
    try:
        await services.control_dispatch(
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
