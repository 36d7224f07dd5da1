from fastapi import APIRouter, status

from api.auth import guarded
from api.deps import IdPath, SessionDep, SettingsDep, TemporalClientDep
from api.paging import PagingDep
from api.schemas.common import Page
from api.schemas.dispatches import ControlBody
from api.schemas.schedules import ScheduleCreate, SchedulePublic, ScheduleUpdate
from api.services import schedules as schedules_service
from core.auth import Permission

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.post(
    "",
    response_model=SchedulePublic,
    status_code=status.HTTP_201_CREATED,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def create_schedule(
    data: ScheduleCreate, session: SessionDep, temporal: TemporalClientDep, settings: SettingsDep
) -> SchedulePublic:
    """Create a schedule: a Temporal Schedule that makes a dispatch at each time of `cron` in
    `timezone`, starting then and lasting `dispatch.duration_minutes` (503 and nothing kept
    without Temporal)."""
    row = await schedules_service.create_schedule(
        session=session, temporal=temporal, settings=settings, data=data
    )
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)


@router.get("", response_model=Page[SchedulePublic], **guarded(Permission.DISPATCHES_READ))
async def list_schedules(
    session: SessionDep, temporal: TemporalClientDep, paging: PagingDep
) -> Page[SchedulePublic]:
    """List schedules by id, each with its next and recent runs."""
    return await schedules_service.list_schedules(session=session, temporal=temporal, paging=paging)


@router.get("/{schedule_id}", response_model=SchedulePublic, **guarded(Permission.DISPATCHES_READ))
async def get_schedule(
    schedule_id: IdPath, session: SessionDep, temporal: TemporalClientDep
) -> SchedulePublic:
    """One schedule with its next 5 runs, its recent runs and the dispatches it made."""
    row = await schedules_service.get_schedule(session=session, schedule_id=schedule_id)
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)


@router.patch(
    "/{schedule_id}", response_model=SchedulePublic, **guarded(Permission.DISPATCHES_WRITE)
)
async def update_schedule(
    schedule_id: IdPath,
    data: ScheduleUpdate,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
) -> SchedulePublic:
    """Edit a schedule (`dispatch` replaces the whole dispatch part); its next runs follow, the
    dispatches it made keep what they were made with."""
    row = await schedules_service.update_schedule(
        session=session, temporal=temporal, settings=settings, schedule_id=schedule_id, data=data
    )
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def delete_schedule(
    schedule_id: IdPath, session: SessionDep, temporal: TemporalClientDep
) -> None:
    """Delete a schedule and its Temporal Schedule: no run after this. The dispatches it made
    stay (`GET /dispatches?schedule_id=` still lists them)."""
    await schedules_service.delete_schedule(
        session=session, temporal=temporal, schedule_id=schedule_id
    )


@router.post(
    "/{schedule_id}/run",
    response_model=SchedulePublic,
    status_code=status.HTTP_202_ACCEPTED,
    **guarded(Permission.DISPATCHES_WRITE),
)
async def run_schedule(
    schedule_id: IdPath, session: SessionDep, temporal: TemporalClientDep, settings: SettingsDep
) -> SchedulePublic:
    """Run a schedule now: one run makes a dispatch starting now (overlap `skip` still
    applies; a paused schedule is a 409). The run is under way when this answers."""
    row = await schedules_service.run_now(
        session=session, temporal=temporal, settings=settings, schedule_id=schedule_id
    )
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)


@router.post(
    "/{schedule_id}/pause", response_model=SchedulePublic, **guarded(Permission.DISPATCHES_WRITE)
)
async def pause_schedule(
    schedule_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    body: ControlBody | None = None,
) -> SchedulePublic:
    """Pause a schedule: no run makes a dispatch until it is resumed (neither by its time nor
    by a backfill); the dispatches it made go on."""
    row = await schedules_service.pause_schedule(
        session=session,
        temporal=temporal,
        settings=settings,
        schedule_id=schedule_id,
        paused=True,
        reason=body.reason if body else None,
    )
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)


@router.post(
    "/{schedule_id}/resume", response_model=SchedulePublic, **guarded(Permission.DISPATCHES_WRITE)
)
async def resume_schedule(
    schedule_id: IdPath,
    session: SessionDep,
    temporal: TemporalClientDep,
    settings: SettingsDep,
    body: ControlBody | None = None,
) -> SchedulePublic:
    """Resume a paused schedule: its next time by the cron makes a dispatch (the times it
    missed while paused are not made up)."""
    row = await schedules_service.pause_schedule(
        session=session,
        temporal=temporal,
        settings=settings,
        schedule_id=schedule_id,
        paused=False,
        reason=body.reason if body else None,
    )
    return await schedules_service.schedule_public(session=session, temporal=temporal, row=row)
