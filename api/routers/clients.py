from typing import Annotated

from fastapi import APIRouter, Query, status

from api import services
from api.auth import guarded
from api.deps import IdPath, SessionDep, SettingsDep, TemporalClientDep
from api.schemas import (
    ClientCreate,
    ClientPublic,
    ClientUpdate,
    MessagePublic,
    OperatorCode,
    Page,
    Tag,
)
from core.auth import Permission
from core.models import MessageStatus

router = APIRouter(prefix="/clients", tags=["clients"])


@router.post(
    "",
    response_model=ClientPublic,
    status_code=status.HTTP_201_CREATED,
    **guarded(Permission.CLIENTS_WRITE),
)
async def create_client(
    data: ClientCreate, session: SessionDep, settings: SettingsDep
) -> ClientPublic:
    """Add a client; the operator code and time zone are derived from the phone when omitted."""
    client = await services.create_client(session=session, data=data, settings=settings)
    return ClientPublic.model_validate(client)


@router.get("", response_model=Page[ClientPublic], **guarded(Permission.CLIENTS_READ))
async def list_clients(
    session: SessionDep,
    tag: Annotated[Tag | None, Query()] = None,
    operator_code: Annotated[OperatorCode | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Page[ClientPublic]:
    """List clients by id, optionally only those with a tag and/or an operator code."""
    clients, total = await services.list_clients(
        session=session, tag=tag, operator_code=operator_code, limit=limit, offset=offset
    )
    return Page(
        items=[ClientPublic.model_validate(c) for c in clients],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{client_id}", response_model=ClientPublic, **guarded(Permission.CLIENTS_READ))
async def get_client(client_id: IdPath, session: SessionDep) -> ClientPublic:
    """One client."""
    return ClientPublic.model_validate(
        await services.get_client(session=session, client_id=client_id)
    )


@router.patch("/{client_id}", response_model=ClientPublic, **guarded(Permission.CLIENTS_WRITE))
async def update_client(
    client_id: IdPath, data: ClientUpdate, session: SessionDep, temporal: TemporalClientDep
) -> ClientPublic:
    """Change some of a client's fields. Messages not yet sent follow: a new phone is where
    they go, a new time zone is the window they wait for (also a message already waiting)."""
    client = await services.update_client(
        session=session, temporal=temporal, client_id=client_id, data=data
    )
    return ClientPublic.model_validate(client)


@router.delete(
    "/{client_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    **guarded(Permission.CLIENTS_WRITE),
)
async def delete_client(
    client_id: IdPath, session: SessionDep, temporal: TemporalClientDep
) -> None:
    """Delete a client; its messages stay in the statistics with the phone they were for, and
    unsent ones end cancelled at once."""
    await services.delete_client(session=session, temporal=temporal, client_id=client_id)


@router.get(
    "/{client_id}/messages",
    response_model=Page[MessagePublic],
    **guarded(Permission.CLIENTS_READ),
)
async def client_messages(
    client_id: IdPath,
    session: SessionDep,
    status: MessageStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Page[MessagePublic]:
    """One client's messages across every dispatch, by id, optionally of one status."""
    return await services.list_client_messages(
        session=session, client_id=client_id, status=status, limit=limit, offset=offset
    )
