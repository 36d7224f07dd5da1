"""The Temporal Schedule that starts the daily report every day at REPORT_HOUR in
REPORT_TIMEZONE, created or updated at worker start."""

import logging

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.settings import Settings
from report.contracts import REPORT_WORKFLOW, ReportInput

log = logging.getLogger(__name__)


def report_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            REPORT_WORKFLOW,
            ReportInput(timezone=settings.report_timezone),
            id=f"{settings.report_schedule_id}-run",
            task_queue=settings.temporal_task_queue,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    hour=[ScheduleRange(settings.report_hour)],
                    minute=[ScheduleRange(0)],
                    second=[ScheduleRange(0)],
                )
            ],
            time_zone_name=settings.report_timezone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_report_schedule(client: Client, settings: Settings) -> None:
    """Creates the schedule, or brings an existing one in line with the settings."""
    schedule = report_schedule(settings)
    try:
        await client.create_schedule(settings.report_schedule_id, schedule)
        log.info("report schedule %s created", settings.report_schedule_id)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(settings.report_schedule_id).update(update)
        log.info("report schedule %s updated", settings.report_schedule_id)
