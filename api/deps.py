"""Injected things, as Annotated aliases for route signatures."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.schemas.common import NO_NUL
from core.models import ROUTE_NAME_MAX_LENGTH
from core.settings import Settings

MAX_ID = 2**63 - 1


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.database.sessions() as session:
        yield session


async def get_temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalClientDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
# Ids are bigint in the database: anything larger is a 422, not a driver error.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
# A message list's filter by send route: any name (a route removed from the configuration
# keeps its history reachable; a name no route has finds nothing).
RouteQuery = Annotated[
    str | None,
    Query(
        max_length=ROUTE_NAME_MAX_LENGTH,
        pattern=NO_NUL,
        description="Only the messages of this send route (any name, configured or not).",
    ),
]
