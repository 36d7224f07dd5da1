"""The record of control actions on a dispatch: every create, edit, pause, resume, cancel,
delete and resend, by the API, by a signal from the Temporal UI or CLI, or by the service
itself, is kept with its time, actor and reason, in the same transaction as the change it
records."""

from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import ACTOR_MAX_LENGTH, STATUS_REASON_MAX_LENGTH, dispatch_event_t


class Action(StrEnum):
    CREATED = "created"
    EDITED = "edited"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    DELETED = "deleted"
    # On a dispatch whose clients a new dispatch sends to again (its details name the new
    # one); the new one's `created` names the first.
    RESENT = "resent"


class Actor(StrEnum):
    API = "api"  # becomes the token's subject once the API authenticates
    TEMPORAL = "temporal"  # a signal or cancellation from the Temporal UI or CLI
    WORKER = "worker"  # the service itself: the remote refused our credentials, error budget


async def record_event(
    session: AsyncSession,
    *,
    dispatch_id: int,
    action: Action,
    actor: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Adds the event to the session's transaction; the caller commits it with its change."""
    await session.execute(
        sa.insert(dispatch_event_t).values(
            dispatch_id=dispatch_id,
            action=action,
            actor=actor[:ACTOR_MAX_LENGTH],
            reason=None if reason is None else reason[:STATUS_REASON_MAX_LENGTH],
            details=details,
        )
    )
