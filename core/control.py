"""Pause, resume and cancel of a dispatch: which status each command moves from and to.

The dispatch row is the control plane: every batch and every attempt reads its status before a
request. One function applies a command, for the API and for the workflow's signal handlers
alike, so both planes follow the same transitions.
"""

from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from core.events import Action, record_event
from core.models import (
    OPEN_MESSAGE_STATUSES,
    STATUS_REASON_MAX_LENGTH,
    UNFINISHED_DISPATCH_STATUSES,
    DispatchStatus,
    MessageStatus,
    dispatch_t,
    message_t,
)


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Transition:
    from_statuses: frozenset[DispatchStatus]
    to: DispatchStatus
    action: Action


TRANSITIONS = {
    Command.PAUSE: Transition(
        frozenset({DispatchStatus.RUNNING}), DispatchStatus.PAUSED, Action.PAUSED
    ),
    Command.RESUME: Transition(
        frozenset({DispatchStatus.PAUSED}), DispatchStatus.RUNNING, Action.RESUMED
    ),
    Command.CANCEL: Transition(
        frozenset(UNFINISHED_DISPATCH_STATUSES),
        DispatchStatus.CANCELLED,
        Action.CANCELLED,
    ),
}

_WHY_NOT = {
    (Command.PAUSE, DispatchStatus.SCHEDULED): "it has not started; edit or cancel it instead",
}


@dataclass(frozen=True)
class Applied:
    status: DispatchStatus
    changed: bool  # False: the dispatch was already there (a repeated command)
    messages_cancelled: int = 0


async def apply_command(
    *,
    session: AsyncSession,
    dispatch_id: int,
    command: Command,
    actor: str,
    reason: str | None = None,
) -> Applied:
    """Moves the dispatch as the command says and commits, with its event; a repeat changes
    nothing and records nothing. Cancel also ends every unsent message `cancelled`. Raises
    NotFound, or Conflict with the reason."""
    transition = TRANSITIONS[command]
    current = (
        await session.execute(
            sa.select(dispatch_t.c.status).where(dispatch_t.c.id == dispatch_id).with_for_update()
        )
    ).scalar_one_or_none()
    if current is None:
        raise NotFound("dispatch", dispatch_id)
    status = DispatchStatus(current)
    if status == transition.to:
        await session.rollback()
        return Applied(status=status, changed=False)
    if status not in transition.from_statuses:
        await session.rollback()
        why = _WHY_NOT.get((command, status), f"it is {status}")
        raise Conflict(f"dispatch {dispatch_id} cannot {command}: {why}")
    kept_reason = None if command == Command.RESUME else (reason or None)
    await session.execute(
        sa.update(dispatch_t)
        .where(dispatch_t.c.id == dispatch_id)
        .values(
            status=transition.to,
            status_reason=None if kept_reason is None else kept_reason[:STATUS_REASON_MAX_LENGTH],
        )
    )
    cancelled = 0
    if command == Command.CANCEL:
        result = await session.execute(
            sa.update(message_t)
            .where(
                message_t.c.dispatch_id == dispatch_id,
                message_t.c.status.in_(OPEN_MESSAGE_STATUSES),
            )
            .values(
                status=MessageStatus.CANCELLED,
                last_error=f"dispatch cancelled: {reason}" if reason else "dispatch cancelled",
            )
        )
        cancelled = int(result.rowcount)  # type: ignore[attr-defined]
    await record_event(
        session,
        dispatch_id=dispatch_id,
        action=transition.action,
        actor=actor,
        reason=reason,
        details={"messages_cancelled": cancelled} if command == Command.CANCEL else None,
    )
    await session.commit()
    return Applied(status=transition.to, changed=True, messages_cancelled=cancelled)
