"""The daily report's activity: gathers one local day's figures and mails them over SMTP; and
the Temporal Schedule that starts the report every day, created or updated at worker start."""

import logging
from datetime import UTC, date, datetime
from email.message import EmailMessage

import aiosmtplib
from temporalio import activity
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

from core import report
from core.contracts import REPORT_WORKFLOW, ReportInput, ReportResult
from core.db import SessionFactory
from core.settings import Settings

log = logging.getLogger(__name__)


class ReportActivities:
    def __init__(self, *, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def send_report(self, input: ReportInput) -> ReportResult:
        """Gathers the day's figures and mails them; an SMTP failure fails the attempt (the
        workflow's retry policy tries again later), nothing else."""
        day = date.fromisoformat(
            input.day or report.previous_day(datetime.now(UTC), input.timezone)
        )
        async with self.sessions() as session:
            figures = await report.gather(session, day=day, timezone=input.timezone)
        subject = report.subject(figures)
        recipients = self.settings.report_recipients
        if not recipients:
            log.warning("report not mailed (no REPORT_RECIPIENTS): %s", subject)
            return ReportResult(day=figures.day, subject=subject, recipients=0)
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.settings.report_sender
        message["To"] = ", ".join(recipients)
        message.set_content(report.as_text(figures))
        message.add_alternative(report.as_html(figures), subtype="html")
        s = self.settings
        await aiosmtplib.send(
            message,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            start_tls=s.smtp_starttls,
            timeout=s.smtp_timeout_seconds,
        )
        log.info("report for %s mailed to %d recipients", figures.day, len(recipients))
        return ReportResult(day=figures.day, subject=subject, recipients=len(recipients))


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
