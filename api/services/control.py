"""Pause, resume and cancel: the dispatch workflow's `control` update; when no workflow can take
it, the row changed here (`core.control.apply_command`) and a workflow still running signalled to
catch up; an Idempotency-Key so that a retried command is not applied twice."""

import hashlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client as TemporalClient
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.services import common as common_service
from core.contracts.control import CONTROL_UPDATE, DISPATCH_NOT_FOUND, ControlResult, ControlUpdate
from core.contracts.shared import dispatch_workflow_id
from core.control import Command, apply_command
from core.errors import Conflict, EngineUnavailable, NotFound
from core.events import Actor
from core.logging import ids
from core.models import Dispatch, IdempotencyKey

log = logging.getLogger(__name__)


async def control_dispatch(
    *,
    session: AsyncSession,
    temporal: TemporalClient,
    dispatch_id: int,
    command: Command,
    reason: str | None,
    update_wait: timedelta,
    actor: str = Actor.API,
    idempotency_key: str | None = None,
) -> tuple[Dispatch, bool]:
    """Pauses, resumes or cancels the dispatch through its workflow's `control` update, which
    answers once the row has changed (every batch and attempt reads it before a request) and
    the sleeping cohorts are woken. A workflow that has ended (or never started) cannot take
    it, nor one that no worker runs within `update_wait`: the row is changed here (which also
    answers a repeat or refuses with the reason), and a running workflow is signalled to
    catch up. A repeat changes nothing; a command the status refuses is a Conflict. With an
    Idempotency-Key already used for the same command, nothing is applied again (the bool
    says so): a retried pause cannot undo a resume that came in between."""
    request_hash = hashlib.sha256(f"{command}\n{dispatch_id}\n{reason}".encode()).hexdigest()
    if idempotency_key is not None:
        earlier = await common_service.created_before(
            session=session, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return earlier, True
    await common_service.get_dispatch(session=session, dispatch_id=dispatch_id)
    await session.rollback()
    handle: WorkflowHandle[Any, Any] = temporal.get_workflow_handle(
        dispatch_workflow_id(dispatch_id)
    )
    try:
        result = await handle.execute_update(
            CONTROL_UPDATE,
            ControlUpdate(command=command, reason=reason, actor=actor),
            result_type=ControlResult,
            rpc_timeout=update_wait,
        )
        changed = result.changed
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(error)
        if isinstance(cause, ApplicationError) and cause.type == DISPATCH_NOT_FOUND:
            raise NotFound("dispatch", dispatch_id) from None
        raise Conflict(message) from None
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as error:
        # No worker took it in time, or the workflow has ended (or never started): the row
        # changes here, which every batch and attempt reads, and a workflow still running is
        # signalled to wake its cohorts (an update delivered later is a harmless repeat).
        if isinstance(error, RPCError) and error.status != RPCStatusCode.NOT_FOUND:
            log.error("%s not delivered: %s", command, error, extra=ids(dispatch_id=dispatch_id))
            raise EngineUnavailable("the workflow service is unavailable; try again") from error
        log.warning("%s applied by the API: %s", command, error, extra=ids(dispatch_id=dispatch_id))
        applied = await apply_command(
            session=session, dispatch_id=dispatch_id, command=command, actor=actor, reason=reason
        )
        changed = applied.changed
        if changed:
            await common_service.signal_changed(
                temporal, dispatch_workflow_id(dispatch_id), command, dispatch_id
            )
    log.info(
        "dispatch %s (%s)%s",
        command,
        reason or "no reason given",
        "" if changed else ", unchanged",
        extra=ids(dispatch_id=dispatch_id),
    )
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(key=idempotency_key, request_hash=request_hash, dispatch_id=dispatch_id)
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # the same key, kept by a concurrent retry
    session.expire_all()
    return await common_service.get_dispatch(session=session, dispatch_id=dispatch_id), False
