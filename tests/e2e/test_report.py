"""The daily report on the dev server: its schedule is created idempotently, and the report
workflow mails yesterday's figures to a real local SMTP server (aiosmtpd); with the SMTP server
down it retries until the server is back, and nothing else waits for it."""

import asyncio
import email
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message as MailMessage
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from core.db import Database
from core.models import message_t
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import free_port
from devstack.processes import service_env
from report.contracts import REPORT_WORKFLOW, ReportInput, ReportResult
from report.schedule import ensure_report_schedule
from tests.factories import make_client, make_dispatch, make_messages
from tests.support import Queues, running_workers, settings_for

pytestmark = pytest.mark.slow

ZONE = "UTC"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[MailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def smtp_server(port: int, inbox: Inbox) -> Controller:
    return Controller(inbox, hostname="127.0.0.1", port=port)


@pytest.fixture
def smtp_port() -> Iterator[int]:
    yield free_port()


async def yesterdays_messages(db: Database) -> int:
    """Three messages of one dispatch whose status changed yesterday: one sent, one delivered
    (both went out), one failed, all through the route `default`, in 2 SMS parts each."""
    clients = [await make_client(db) for _ in range(3)]
    dispatch = await make_dispatch(db)
    messages = await make_messages(db, dispatch, clients, cohort="all")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    async with db.sessions() as session:
        for message, status, error in zip(
            messages,
            ["sent", "delivered", "failed"],
            [None, None, "HTTP 400: bad phone"],
            strict=True,
        ):
            await session.execute(
                sa.update(message_t)
                .where(message_t.c.id == message.id)
                .values(
                    status=status,
                    last_error=error,
                    updated_at=yesterday,
                    route="default",
                    segments=2,
                )
            )
        await session.commit()
    assert dispatch.id is not None
    return dispatch.id


async def test_report_is_mailed_and_waits_out_an_smtp_outage(
    dev_env: WorkflowEnvironment, settings: Settings, queues: Queues, db: Database, smtp_port: int
) -> None:
    s = settings_for(
        settings,
        dev_env.client,
        queues,
        smtp_port=smtp_port,
        report_recipients=["ops@example.com", "boss@example.com"],
        report_timezone=ZONE,
        report_schedule_id=f"daily-report-{queues.main}",
    )
    dispatch_id = await yesterdays_messages(db)
    inbox = Inbox()
    async with running_workers(s, dev_env.client, db):
        # Created, then brought in line again: idempotent.
        await ensure_report_schedule(dev_env.client, s)
        await ensure_report_schedule(dev_env.client, s.model_copy(update={"report_hour": 6}))
        described = await dev_env.client.get_schedule_handle(s.report_schedule_id).describe()
        spec = described.schedule.spec
        assert spec.time_zone_name == ZONE
        assert [r.start for r in spec.calendars[0].hour] == [6]

        # The SMTP server is down when the report starts: the activity fails and is retried.
        handle = await dev_env.client.start_workflow(
            REPORT_WORKFLOW,
            ReportInput(timezone=ZONE),
            id=f"report-{queues.main}",
            task_queue=s.temporal_task_queue,
            result_type=ReportResult,
        )
        async with asyncio.timeout(30):
            while True:
                pending = (await handle.describe()).raw_description.pending_activities
                if pending and pending[0].attempt >= 2:
                    break
                await asyncio.sleep(0.2)
        server = smtp_server(smtp_port, inbox)
        server.start()
        try:
            async with asyncio.timeout(60):
                result = await handle.result()
            # `make report` sends it at once through the same worker.
            made = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "report", "--day", result.day],
                cwd=PROJECT_ROOT,
                env=service_env(s),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.stop()
        assert made.returncode == 0, made.stderr
        assert "(mailed to 2 recipients)" in made.stdout
        await dev_env.client.get_schedule_handle(s.report_schedule_id).delete()

    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert (result.day, result.recipients) == (yesterday, 2)
    mail, again = inbox.mails
    assert again["Subject"] == mail["Subject"]
    assert mail["Subject"] == f"Mailing report for {yesterday}: 2 sent (1 delivered), 3 in all"
    assert mail["To"] == "ops@example.com, boss@example.com"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in mail.walk()
        if not part.is_multipart()
    }  # type: ignore[union-attr]
    assert set(parts) == {"text/plain", "text/html"}
    assert "HTTP 400: bad phone" in parts["text/plain"]
    assert f"#{dispatch_id}" in parts["text/html"] and "<table" in parts["text/html"]
    total_line = next(line for line in parts["text/plain"].splitlines() if "total" in line)
    # pending, retrying, sent, delivered, undelivered, failed, expired, cancelled, opted_out,
    # unrendered, capped
    assert total_line.split()[1:] == ["0", "0", "1", "1", "0", "1", "0", "0", "0", "0", "0"]
    # Per route: sent (went out), failed, segments sent, delivered, undelivered, delivered %.
    lines = parts["text/plain"].splitlines()
    route_line = lines[lines.index("By route:") + 2].split()
    assert route_line == ["default", "2", "1", "4", "1", "0", "50", "%"]
    row = "<tr><td>default</td><td>2</td><td>1</td><td>4</td><td>1</td><td>0</td><td>50 %</td></tr>"
    assert row in parts["text/html"]
