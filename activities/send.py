"""The send activity: one attempt to deliver one message to the external API."""

import json
import logging
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.clock import activity_now
from activities.dispatch import client_t, dispatch_t, finish_open_message, message_t
from core.contracts import REMOTE_REJECTED, REMOTE_UNAVAILABLE, SendInput, SendResult
from core.db import SessionFactory
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES, DispatchStatus, MessageStatus
from core.windows import SendWindow, is_open, next_send_instant

log = logging.getLogger(__name__)

# A paused dispatch is looked at again after this long.
PAUSE_RECHECK = timedelta(minutes=1)
ERROR_MAX_LENGTH = 500


class RemoteError(Exception):
    """The remote did not accept the message; `permanent` ones are never retried."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def check_answer(response: httpx.Response) -> None:
    """Raises RemoteError unless the answer is HTTP 200 with JSON code 0."""
    status = response.status_code
    if status == 429:
        raise RemoteError("HTTP 429 throttled", retry_after=_retry_after(response))
    if status == 408 or status >= 500:
        raise RemoteError(f"HTTP {status}")
    if 400 <= status < 500:
        raise RemoteError(f"HTTP {status}: {response.text[:200]}", permanent=True)
    if status != 200:
        raise RemoteError(f"unexpected HTTP {status}")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RemoteError(f"garbage answer: {response.text[:100]!r}") from None
    if not isinstance(body, dict) or body.get("code") != 0:
        raise RemoteError(f"answer code is not 0: {str(body)[:100]}")


class SendActivities:
    """Sends through one shared HTTP client; the message row decides whether to send at all."""

    def __init__(
        self, *, sessions: SessionFactory, http: httpx.AsyncClient, base_url: str, token: str
    ) -> None:
        self.sessions = sessions
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token

    async def _load(self, message_id: int) -> Any:
        statement = (
            sa.select(
                message_t.c.id,
                message_t.c.status,
                message_t.c.dispatch_id,
                message_t.c.client_id,
                client_t.c.phone,
                client_t.c.timezone,
                dispatch_t.c.text,
                dispatch_t.c.status.label("dispatch_status"),
                dispatch_t.c.start_at,
                dispatch_t.c.end_at,
                dispatch_t.c.window_start,
                dispatch_t.c.window_end,
            )
            .select_from(message_t)
            .join(dispatch_t, dispatch_t.c.id == message_t.c.dispatch_id)
            .outerjoin(client_t, client_t.c.id == message_t.c.client_id)
            .where(message_t.c.id == message_id)
        )
        async with self.sessions() as session:
            return (await session.execute(statement)).one_or_none()

    async def _record(self, message_id: int, **values: Any) -> None:
        async with self.sessions() as session:
            await session.execute(
                sa.update(message_t)
                .where(message_t.c.id == message_id)
                .values(attempts=message_t.c.attempts + 1, **values)
            )
            await session.commit()

    async def _finish(self, message_id: int, status: MessageStatus, error: str) -> SendResult:
        await finish_open_message(self.sessions, message_id=message_id, status=status, error=error)
        return SendResult(message_id=message_id, status=status)

    @activity.defn
    async def send_message(self, input: SendInput) -> SendResult:
        """Checks the message, its dispatch, the deadline and the window now, then sends once."""
        message_id = input.message_id
        row = await self._load(message_id)
        if row is None:
            log.info("message no longer exists", extra=ids(message_id=message_id))
            return SendResult(message_id=message_id, status=MessageStatus.CANCELLED)
        log_ids = ids(message_id=message_id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        if row.status not in OPEN_MESSAGE_STATUSES:
            return SendResult(message_id=message_id, status=row.status)
        if row.client_id is None:
            return await self._finish(message_id, MessageStatus.CANCELLED, "client deleted")
        if row.dispatch_status == DispatchStatus.CANCELLED:
            return await self._finish(message_id, MessageStatus.CANCELLED, "dispatch cancelled")

        now = activity_now()
        if now >= row.end_at:
            return await self._finish(message_id, MessageStatus.EXPIRED, "end time passed")
        if row.dispatch_status == DispatchStatus.PAUSED:
            return SendResult(message_id, "paused", next_open_at=now + PAUSE_RECHECK)
        window = None
        if row.window_start is not None and row.window_end is not None:
            window = SendWindow(start=row.window_start, end=row.window_end)
        if now < row.start_at or not is_open(at=now, window=window, timezone=row.timezone):
            opens = next_send_instant(
                now=now,
                start_at=row.start_at,
                end_at=row.end_at,
                window=window,
                timezone=row.timezone,
            )
            if opens is None:
                return await self._finish(
                    message_id, MessageStatus.EXPIRED, "window does not open before end time"
                )
            return SendResult(message_id, "outside_window", next_open_at=opens)

        try:
            await self._post(message_id=message_id, phone=row.phone, text=row.text)
        except RemoteError as error:
            reason = str(error)[:ERROR_MAX_LENGTH]
            if error.permanent:
                await self._record(message_id, status=MessageStatus.FAILED, last_error=reason)
                log.warning("remote rejected message: %s", reason, extra=log_ids)
                raise ApplicationError(reason, type=REMOTE_REJECTED, non_retryable=True) from None
            await self._record(message_id, status=MessageStatus.RETRYING, last_error=reason)
            log.warning("send failed, will retry: %s", reason, extra=log_ids)
            delay = None if error.retry_after is None else timedelta(seconds=error.retry_after)
            raise ApplicationError(
                reason, type=REMOTE_UNAVAILABLE, next_retry_delay=delay
            ) from None
        # Sent wins over any final status set meanwhile: the remote has the message.
        await self._record(
            message_id, status=MessageStatus.SENT, sent_at=activity_now(), last_error=None
        )
        log.info("message sent", extra=log_ids)
        return SendResult(message_id=message_id, status=MessageStatus.SENT)

    async def _post(self, *, message_id: int, phone: str, text: str) -> None:
        try:
            response = await self.http.post(
                f"{self.base_url}/send/{message_id}",
                json={"id": message_id, "phone": int(phone), "text": text},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.TimeoutException:
            raise RemoteError("timed out") from None
        except httpx.TransportError as error:
            raise RemoteError(f"transport error: {type(error).__name__}: {error}") from None
        check_answer(response)
