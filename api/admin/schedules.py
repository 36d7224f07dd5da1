"""The schedules page: every schedule with its next runs, and its pause, resume, run now and
delete. Mirrors api/routers/schedules.py, through the same service functions."""

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.admin.common import PAGE_SIZE, SessionUser, admin_router, back, render
from api.admin.session import check_csrf
from api.deps import SessionDep, SettingsDep, TemporalClientDep
from api.paging import Paging, decode_cursor
from api.services import schedules as schedules_service
from core.auth import Permission
from core.errors import Conflict, NotFound
from core.models import CONTROL_REASON_MAX_LENGTH

router = admin_router()

PAGE = "/admin/schedules"
# What each button asks of the service.
COMMANDS = ("pause", "resume", "run", "delete")


@router.get("/schedules")
async def schedules(
    request: Request,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    cursor: str | None = None,
    notice: str = "",
) -> HTMLResponse:
    session.require(Permission.DISPATCHES_READ)
    after_id = None if not cursor else decode_cursor(cursor)
    page = await schedules_service.list_schedules(
        session=db,
        temporal=temporal,
        paging=Paging(limit=PAGE_SIZE, offset=0, after_id=after_id, with_total=True),
    )
    next_url = f"{PAGE}?cursor={quote(page.next_cursor)}" if page.next_cursor else None
    return render(
        request,
        "schedules.html",
        session,
        page=page,
        next_url=next_url,
        notice=notice,
        temporal_schedules=(
            f"{settings.temporal_ui}/namespaces/{quote(settings.temporal_namespace)}/schedules"
        ),
    )


@router.post("/schedules/{schedule_id}/{command}")
async def command(
    request: Request,
    schedule_id: int,
    command: str,
    session: SessionUser,
    db: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> RedirectResponse:
    """Pause, resume, run now or delete, as POST /schedules/{id}/pause (and the others); the
    list again, saying what was done."""
    if command not in COMMANDS:
        raise NotFound("page", schedule_id)
    session.require(Permission.DISPATCHES_WRITE)
    await check_csrf(request, session)
    form = await request.form()
    reason = str(form.get("reason", "")).strip()[:CONTROL_REASON_MAX_LENGTH] or None
    try:
        if command == "delete":
            await schedules_service.delete_schedule(
                session=db, temporal=temporal, schedule_id=schedule_id
            )
            return back(PAGE, f"schedule #{schedule_id} deleted; its dispatches stay")
        if command == "run":
            await schedules_service.run_now(
                session=db, temporal=temporal, settings=settings, schedule_id=schedule_id
            )
            return back(PAGE, f"schedule #{schedule_id} is running now")
        await schedules_service.pause_schedule(
            session=db,
            temporal=temporal,
            settings=settings,
            schedule_id=schedule_id,
            paused=command == "pause",
            reason=reason,
        )
    except Conflict as error:
        return back(PAGE, f"not done: {error}")
    return back(PAGE, f"schedule #{schedule_id} {command}d")
