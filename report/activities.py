"""The daily report's activity: gathers one local day's figures and mails them over SMTP."""

import logging
from datetime import UTC, date, datetime
from email.message import EmailMessage

import aiosmtplib
from temporalio import activity

from core import metrics
from core.db import SessionFactory
from core.settings import Settings
from report import figures as report
from report.contracts import ReportInput, ReportResult

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
            metrics.REPORT_LAST_SENT.set_to_current_time()
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
        metrics.REPORT_LAST_SENT.set_to_current_time()
        return ReportResult(day=figures.day, subject=subject, recipients=len(recipients))
