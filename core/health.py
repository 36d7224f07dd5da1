"""Readiness of a process: PostgreSQL and Temporal answer. Liveness asks nothing of them: a probe
that failed while PostgreSQL is down would restart every pod during a database outage, which
helps nothing (the processes ride it out themselves)."""

import asyncio

import sqlalchemy as sa
from temporalio.client import Client

from core.db import SessionFactory

PROBE_TIMEOUT_SECONDS = 3.0


async def dependencies(sessions: SessionFactory, temporal: Client) -> dict[str, str]:
    """ "ok", or why not, for the database and Temporal."""
    states = {"database": "ok", "temporal": "ok"}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), sessions() as session:
            await session.execute(sa.text("SELECT 1"))
    except Exception as error:
        states["database"] = f"unavailable: {type(error).__name__}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await temporal.service_client.check_health()
    except Exception as error:
        states["temporal"] = f"unavailable: {type(error).__name__}"
    return states
