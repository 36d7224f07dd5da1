"""A schedule (a recurring dispatch): its row and its Temporal Schedule `schedule-<id>`, kept in
step by every change (create, edit, pause, resume, delete), "run now", and the schedule as
answered, with Temporal's own account of its next and recent runs.

The row is the definition; the Temporal Schedule is when it runs. A create commits the row, then
makes the Temporal Schedule, and deletes the row again when Temporal refuses or is away. An
edit, a pause, a resume and a delete hold the row's lock while they change Temporal, and commit
only once Temporal did: without Temporal, nothing changes (EngineUnavailable). A Temporal
Schedule found missing is made again from the row.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio.client import Client as TemporalClient
from temporalio.client import Schedule as TemporalSchedule
from temporalio.client import (
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdateInput,
)
from temporalio.client import ScheduleUpdate as TemporalScheduleUpdate
from temporalio.service import RPCError, RPCStatusCode

from api.paging import Paging
from api.schemas.common import Page
from api.schemas.schedules import (
    ScheduleCreate,
    ScheduleDispatch,
    SchedulePublic,
    ScheduleRunPublic,
    ScheduleUpdate,
)
from api.services import common as common_service
from core.contracts.schedule import ScheduledDispatchInput, temporal_schedule_id
from core.errors import Conflict, EngineUnavailable, InvalidRequest, NotFound
from core.models import IdempotencyKey, Schedule, dispatch_t
from core.settings import Settings
from workflows.schedule import ScheduledDispatchWorkflow

log = logging.getLogger(__name__)

NEXT_RUNS_SHOWN = 5
# A page of schedules must not wait long for a Temporal that does not answer, nor ask it for
# a thousand descriptions at once.
DESCRIBE_TIMEOUT = timedelta(seconds=2)
DESCRIBE_CONCURRENCY = 20
# Temporal's own overlap policy. A run ends as soon as its dispatch is made, so runs overlap
# only when one is held up (no worker, the database down): the next then waits behind it, one
# at most, and an outage never piles up runs. Overlap `skip` and `allow` are the activity's.
TEMPORAL_OVERLAP = ScheduleOverlapPolicy.BUFFER_ONE
# A time the Temporal server itself missed (it was down) is made up for within this long
# after it, never later: a backfill makes up older ones by hand.
CATCHUP_WINDOW = timedelta(minutes=10)


def temporal_schedule(row: Schedule, *, task_queue: str) -> TemporalSchedule:
    """The Temporal Schedule of a schedule's row: its cron in its zone, its paused state, and
    its action, the run workflow, which reads everything else from the row when it runs."""
    assert row.id is not None
    return TemporalSchedule(
        action=ScheduleActionStartWorkflow(
            ScheduledDispatchWorkflow.run,
            ScheduledDispatchInput(schedule_id=row.id),
            id=temporal_schedule_id(row.id),
            task_queue=task_queue,
            static_summary=f"schedule {row.id}: {row.name}",
        ),
        spec=ScheduleSpec(cron_expressions=[row.cron], time_zone_name=row.timezone),
        policy=SchedulePolicy(overlap=TEMPORAL_OVERLAP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(paused=row.paused, note=row.pause_reason or ""),
    )


def _refused_or_away(error: RPCError) -> Exception:
    """Temporal's answer as a domain error: its judgement of the spec on the field at fault
    (what core.cron lets through but Temporal does not), anything else unavailable."""
    if error.status == RPCStatusCode.INVALID_ARGUMENT:
        field = "timezone" if "time zone" in error.message else "cron"
        return InvalidRequest(error.message, field=field)
    return EngineUnavailable("the workflow service is unavailable; try again")


def check_dispatch(dispatch: ScheduleDispatch, *, max_segments: int) -> None:
    """Refuses, on `dispatch.text`, a text POST /dispatches would refuse (its placeholders,
    MAX_SEGMENTS, what normalizing leaves)."""
    try:
        common_service.storable_text(
            dispatch.text, normalize_text=dispatch.normalize_text, max_segments=max_segments
        )
    except InvalidRequest as error:
        field = f"dispatch.{error.field}" if error.field else "dispatch"
        raise InvalidRequest(str(error), field=field) from None


async def get_schedule(
    *, session: AsyncSession, schedule_id: int, for_update: bool = False
) -> Schedule:
    row = await session.get(Schedule, schedule_id, with_for_update=for_update)
    if row is None:
        raise NotFound("schedule", schedule_id)
    return row


async def _on_temporal(
    *,
    temporal: TemporalClient,
    row: Schedule,
    settings: Settings,
    call: Callable[[ScheduleHandle], Awaitable[None]],
) -> None:
    """`call` on the row's Temporal Schedule; one found missing is made again from the row
    first. Temporal's refusal or absence as a domain error."""
    assert row.id is not None
    schedule_id = temporal_schedule_id(row.id)
    try:
        try:
            await call(temporal.get_schedule_handle(schedule_id))
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            log.warning("Temporal Schedule %s was missing: made again from its row", schedule_id)
            handle = await temporal.create_schedule(
                schedule_id, temporal_schedule(row, task_queue=settings.temporal_task_queue)
            )
            await call(handle)
    except RPCError as error:
        log.error("Temporal Schedule %s not changed: %s", schedule_id, error)
        raise _refused_or_away(error) from error


def _replace_with(row: Schedule, settings: Settings) -> Callable[[ScheduleHandle], Awaitable[None]]:
    schedule = temporal_schedule(row, task_queue=settings.temporal_task_queue)

    def updated(_: ScheduleUpdateInput) -> TemporalScheduleUpdate:
        return TemporalScheduleUpdate(schedule=schedule)

    async def replace(handle: ScheduleHandle) -> None:
        await handle.update(updated)

    return replace


async def create_schedule(
    *, session: AsyncSession, temporal: TemporalClient, settings: Settings, data: ScheduleCreate
) -> Schedule:
    """Stores the schedule, then makes its Temporal Schedule; without Temporal (or refused by
    it) the row goes again and nothing is kept."""
    check_dispatch(data.dispatch, max_segments=settings.max_segments)
    row = Schedule(
        name=data.name,
        cron=data.cron,
        timezone=data.timezone,
        dispatch=data.dispatch.model_dump(mode="json"),
        overlap=data.overlap,
    )
    session.add(row)
    await session.commit()
    assert row.id is not None
    schedule = temporal_schedule(row, task_queue=settings.temporal_task_queue)
    try:
        try:
            await temporal.create_schedule(temporal_schedule_id(row.id), schedule)
        except ScheduleAlreadyRunningError:
            # Left by a database that was reset under a Temporal that was not: the row wins.
            handle = temporal.get_schedule_handle(temporal_schedule_id(row.id))
            log.warning("Temporal Schedule %s existed: replaced", handle.id)
            await _replace_with(row, settings)(handle)
    except RPCError as error:
        log.error("schedule %s not created in Temporal: %s", row.id, error)
        await session.delete(row)
        await session.commit()
        raise _refused_or_away(error) from error
    log.info("schedule %s created: %r in %s", row.id, row.cron, row.timezone)
    return row


async def update_schedule(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    schedule_id: int,
    data: ScheduleUpdate,
) -> Schedule:
    """Changes the given fields (a field given as null is left as it is) and the Temporal
    Schedule with them, or nothing."""
    row = await get_schedule(session=session, schedule_id=schedule_id, for_update=True)
    if data.dispatch is not None:
        try:
            check_dispatch(data.dispatch, max_segments=settings.max_segments)
        except InvalidRequest:
            await session.rollback()
            raise
        row.dispatch = data.dispatch.model_dump(mode="json")
    for field in ("name", "cron", "timezone", "overlap"):
        if (value := getattr(data, field)) is not None:
            setattr(row, field, str(value))
    try:
        await _on_temporal(
            temporal=temporal, row=row, settings=settings, call=_replace_with(row, settings)
        )
    except (InvalidRequest, EngineUnavailable):
        await session.rollback()
        raise
    await session.commit()
    log.info("schedule %s updated: %s", schedule_id, sorted(data.model_fields_set))
    return row


async def pause_schedule(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    schedule_id: int,
    paused: bool,
    reason: str | None = None,
) -> Schedule:
    """Pauses (no run makes a dispatch, by its time or a backfill) or resumes the schedule;
    doing it twice changes nothing but the reason."""
    row = await get_schedule(session=session, schedule_id=schedule_id, for_update=True)
    row.paused = paused
    row.pause_reason = reason if paused else None
    note = reason or ("paused" if paused else "resumed")

    async def toggle(handle: ScheduleHandle) -> None:
        if paused:
            await handle.pause(note=note)
        else:
            await handle.unpause(note=note)

    try:
        await _on_temporal(temporal=temporal, row=row, settings=settings, call=toggle)
    except (InvalidRequest, EngineUnavailable):
        await session.rollback()
        raise
    await session.commit()
    log.info("schedule %s %s: %s", schedule_id, "paused" if paused else "resumed", note)
    return row


async def delete_schedule(
    *, session: AsyncSession, temporal: TemporalClient, schedule_id: int
) -> None:
    """Deletes the Temporal Schedule (no run after this), then the row. The dispatches it made
    stay, with their `schedule_id`; a run already started finds the row gone and makes none."""
    row = await get_schedule(session=session, schedule_id=schedule_id, for_update=True)
    try:
        await temporal.get_schedule_handle(temporal_schedule_id(schedule_id)).delete()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            await session.rollback()
            log.error("schedule %s not deleted in Temporal: %s", schedule_id, error)
            raise EngineUnavailable("the workflow service is unavailable; try again") from error
    await session.delete(row)
    await session.commit()
    log.info("schedule %s deleted", schedule_id)


async def run_now(
    *, session: AsyncSession, temporal: TemporalClient, settings: Settings, schedule_id: int
) -> Schedule:
    """Triggers one run now (its dispatch starts now, and lasts its duration), as its cron
    would; overlap `skip` still applies. A paused schedule is a Conflict: it makes nothing."""
    row = await get_schedule(session=session, schedule_id=schedule_id)
    if row.paused:
        raise Conflict(f"schedule {schedule_id} is paused: resume it to run it")

    async def trigger(handle: ScheduleHandle) -> None:
        # Now, even behind a run that is held up.
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)

    await _on_temporal(temporal=temporal, row=row, settings=settings, call=trigger)
    log.info("schedule %s run now", schedule_id)
    return row


async def _describe(
    temporal: TemporalClient, schedule_id: int, slots: asyncio.Semaphore
) -> ScheduleDescription | None:
    handle = temporal.get_schedule_handle(temporal_schedule_id(schedule_id))
    try:
        async with slots:
            return await handle.describe(rpc_timeout=DESCRIBE_TIMEOUT)
    except RPCError as error:
        log.info("schedule %s not described: %s", schedule_id, error)
        return None


async def schedules_public(
    *, session: AsyncSession, temporal: TemporalClient, rows: list[Schedule]
) -> list[SchedulePublic]:
    """The schedules as answered: each with its next runs in its zone and its recent runs
    (described by Temporal, all at once), the dispatch each run made, and its dispatches
    counted."""
    schedule_ids = [row.id for row in rows if row.id is not None]
    counts: dict[int, int] = {}
    if schedule_ids:
        counted = await session.execute(
            sa.select(dispatch_t.c.schedule_id, sa.func.count())
            .where(dispatch_t.c.schedule_id.in_(schedule_ids))
            .group_by(dispatch_t.c.schedule_id)
        )
        counts = {schedule_id: int(n) for schedule_id, n in counted}
    slots = asyncio.Semaphore(DESCRIBE_CONCURRENCY)
    descriptions = await asyncio.gather(*(_describe(temporal, i, slots) for i in schedule_ids))
    runs = {
        row_id: list(reversed(d.info.recent_actions)) if d is not None else []
        for row_id, d in zip(schedule_ids, descriptions, strict=True)
    }
    workflow_ids = [
        getattr(run.action, "workflow_id", "") for found in runs.values() for run in found
    ]
    made: dict[str, int] = {}
    if workflow_ids:
        # A run's workflow id is the Idempotency-Key of the dispatch it made.
        keys = await session.execute(
            sa.select(col(IdempotencyKey.key), col(IdempotencyKey.dispatch_id)).where(
                col(IdempotencyKey.key).in_(workflow_ids)
            )
        )
        made = {key: dispatch_id for key, dispatch_id in keys}
    answers = []
    for row, description in zip(rows, descriptions, strict=True):
        assert row.id is not None
        zone = ZoneInfo(row.timezone)
        next_runs = []
        if description is not None and not row.paused:
            next_runs = [
                t.astimezone(zone) for t in description.info.next_action_times[:NEXT_RUNS_SHOWN]
            ]
        recent = []
        for run in runs[row.id]:
            workflow_id = str(getattr(run.action, "workflow_id", ""))
            recent.append(
                ScheduleRunPublic(
                    scheduled_at=run.scheduled_at.astimezone(zone),
                    started_at=run.started_at.astimezone(zone),
                    workflow_id=workflow_id,
                    dispatch_id=made.get(workflow_id),
                )
            )
        answers.append(
            SchedulePublic(
                id=row.id,
                name=row.name,
                cron=row.cron,
                timezone=row.timezone,
                dispatch=ScheduleDispatch.model_validate(row.dispatch),
                overlap=row.overlap,
                paused=row.paused,
                pause_reason=row.pause_reason,
                temporal_id=temporal_schedule_id(row.id),
                next_runs=next_runs,
                recent_runs=recent,
                described=description is not None,
                dispatch_count=counts.get(row.id, 0),
                runs_skipped=row.runs_skipped,
                last_skipped_at=row.last_skipped_at,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    return answers


async def schedule_public(
    *, session: AsyncSession, temporal: TemporalClient, row: Schedule
) -> SchedulePublic:
    (answer,) = await schedules_public(session=session, temporal=temporal, rows=[row])
    return answer


async def list_schedules(
    *, session: AsyncSession, temporal: TemporalClient, paging: Paging
) -> Page[SchedulePublic]:
    """Schedules by id, each as answered (Temporal describes the page's, at once)."""
    total = await paging.total(session, Schedule, [])
    query = paging.select(sa.select(Schedule), col(Schedule.id))
    found: list[Any] = list((await session.execute(query)).scalars().all())
    rows, next_cursor = paging.cut(found, common_service.row_id)
    return Page(
        items=await schedules_public(session=session, temporal=temporal, rows=rows),
        total=total,
        limit=paging.limit,
        offset=paging.offset,
        next_cursor=next_cursor,
    )
