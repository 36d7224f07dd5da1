"""A dispatch's test sends: its text, as it stands, rendered for a few numbers and sent now
through the normal send path (workflows.test_send), each as a `test_message` row of its own,
never one of the dispatch's messages nor counted with them; and the list of those rows."""

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError

from api.schemas.test_sends import TestEntryStatus, TestMessagePublic, TestSendEntry
from api.services import common as common_service
from core import templates
from core.contracts.shared import SendOptions
from core.contracts.test_send import TEST_SEND_DEADLINE, TestSendInput, workflow_id_of_test
from core.errors import Conflict, EngineUnavailable
from core.logging import ids
from core.models import UNFINISHED_DISPATCH_STATUSES, client_t, test_message_t
from core.phones import operator_code
from core.search import of_dispatch
from core.segments import measure
from core.settings import Settings
from workflows.test_send import TestSendWorkflow

log = logging.getLogger(__name__)

# The most test messages a list answers, newest first.
TESTS_LISTED = 100
OPTED_OUT_REASON = "the number's client is on the stop list: nothing is sent to it"


async def send_tests(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    dispatch_id: int,
    phones: Sequence[str],
    actor: str,
) -> list[TestSendEntry]:
    """Renders the dispatch's text for each number (normalized; one given twice counts once):
    with its client's phone, tag, zone and attributes, or with the phone alone for a number
    no client has. A rendering that misses a key, and a client on the stop list, are answered
    and neither stored nor sent. The others are stored `pending` and their workflow started:
    they go now, whatever the dispatch's start, window or pause. Conflict once the dispatch
    has ended (completed or cancelled)."""
    dispatch = await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    status, text = dispatch.status, dispatch.text
    if status not in UNFINISHED_DISPATCH_STATUSES:
        await session.rollback()
        raise Conflict(
            f"dispatch {dispatch_id} is {status}: a test send needs it scheduled, running or paused"
        )
    try:
        template = templates.check(text)
    except templates.TemplateRefused as error:
        await session.rollback()
        raise Conflict(f"the dispatch's text cannot be rendered: {error}") from None
    numbers = list(dict.fromkeys(phones))
    clients = {
        row.phone: row
        for row in await session.execute(
            sa.select(
                client_t.c.id,
                client_t.c.phone,
                client_t.c.operator_code,
                client_t.c.tag,
                client_t.c.timezone,
                client_t.c.attributes,
                client_t.c.opted_out,
            ).where(client_t.c.phone.in_(numbers))
        )
    }
    entries: list[TestSendEntry] = []
    rows: list[dict[str, Any]] = []
    for phone in numbers:
        entry, row = _judge(template, phone, clients.get(phone), dispatch_id, actor)
        entries.append(entry)
        if row is not None:
            rows.append(row)
    if not rows:
        await session.rollback()
        return entries
    inserted = await session.execute(
        sa.insert(test_message_t).returning(test_message_t.c.id, test_message_t.c.phone), rows
    )
    id_of = {phone: message_id for message_id, phone in inserted}
    await session.commit()
    for entry in entries:
        if entry.status == TestEntryStatus.PENDING:
            entry.id = id_of[entry.phone]
    message_ids = [id_of[row["phone"]] for row in rows]
    await _start(
        session=session,
        temporal=temporal,
        settings=settings,
        dispatch_id=dispatch_id,
        message_ids=message_ids,
    )
    log.info(
        "test send of %d messages started (%s)",
        len(message_ids),
        ", ".join(map(str, message_ids)),
        extra=ids(dispatch_id=dispatch_id, message_id=message_ids[0]),
    )
    return entries


def _judge(
    template: templates.TextTemplate,
    phone: str,
    client: Any,
    dispatch_id: int,
    actor: str,
) -> tuple[TestSendEntry, dict[str, Any] | None]:
    """The number's entry, and its row to store when it is to be sent."""
    client_id = None if client is None else client.id
    if client is not None and client.opted_out:
        return _not_sent(phone, client_id, TestEntryStatus.OPTED_OUT, OPTED_OUT_REASON), None
    values = templates.client_values(
        phone=phone,
        tag=None if client is None else client.tag,
        timezone=None if client is None else client.timezone,
        attributes=None if client is None else client.attributes,
    )
    text = template.render(values)
    if isinstance(text, templates.Missing):
        reason = text.reason if client is not None else _unknown_number(text)
        return _not_sent(phone, client_id, TestEntryStatus.UNRENDERED, reason), None
    segments = measure(text).segments
    entry = TestSendEntry(
        id=None,
        phone=phone,
        client_id=client_id,
        text=text,
        segments=segments,
        status=TestEntryStatus.PENDING,
        reason=None,
    )
    row = {
        "dispatch_id": dispatch_id,
        "client_id": client_id,
        "phone": phone,
        "operator_code": operator_code(phone) if client is None else client.operator_code,
        "text": text,
        "segments": segments,
        "actor": actor,
    }
    return entry, row


def _not_sent(
    phone: str, client_id: int | None, status: TestEntryStatus, reason: str
) -> TestSendEntry:
    return TestSendEntry(
        id=None,
        phone=phone,
        client_id=client_id,
        text=None,
        segments=None,
        status=status,
        reason=reason,
    )


def _unknown_number(missing: templates.Missing) -> str:
    named = ", ".join(f"`{key}`" for key in missing.keys)
    return f"no client has this number, and the text's {named} has no default"


async def _start(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    settings: Settings,
    dispatch_id: int,
    message_ids: list[int],
) -> None:
    """Starts the test send's workflow; without Temporal its rows go again (EngineUnavailable):
    nothing was sent, a retry sends anew."""
    try:
        await temporal.start_workflow(
            TestSendWorkflow.run,
            TestSendInput(
                dispatch_id=dispatch_id,
                message_ids=message_ids,
                send=SendOptions.from_settings(settings),
                deadline_seconds=TEST_SEND_DEADLINE.total_seconds(),
            ),
            id=workflow_id_of_test(message_ids[0]),
            task_queue=settings.temporal_task_queue,
            search_attributes=of_dispatch(dispatch_id),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RPCError as error:
        log.error("test send did not start: %s", error, extra=ids(dispatch_id=dispatch_id))
        await session.execute(sa.delete(test_message_t).where(test_message_t.c.id.in_(message_ids)))
        await session.commit()
        raise EngineUnavailable("the workflow service is unavailable; try again") from error


async def list_tests(
    *, session: AsyncSession, dispatch_id: int, limit: int = TESTS_LISTED
) -> list[TestMessagePublic]:
    """The dispatch's test messages, newest first (at most `limit`)."""
    await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    rows = await session.execute(
        sa.select(test_message_t)
        .where(test_message_t.c.dispatch_id == dispatch_id)
        .order_by(test_message_t.c.id.desc())
        .limit(limit)
    )
    return [TestMessagePublic.model_validate(row) for row in rows]
