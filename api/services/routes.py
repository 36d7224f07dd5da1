"""The send routes: each configured route's definition with its circuit's health, read from the
`send_route` table every worker process shares (a route without a row is closed)."""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.routes import RouteHealth, RoutePublic
from core.models import send_route_t
from core.routes import CircuitState, Route

CLOSED = RouteHealth(
    state=CircuitState.CLOSED,
    since=None,
    down_since=None,
    next_probe_at=None,
    failed_probes=0,
    last_error=None,
    last_error_at=None,
)


async def route_health(*, session: AsyncSession, names: Sequence[str]) -> dict[str, RouteHealth]:
    """Each named route's health now."""
    t = send_route_t.c
    rows = await session.execute(sa.select(send_route_t).where(t.name.in_(list(names))))
    known = {
        row.name: RouteHealth(
            state=CircuitState(row.state),
            since=row.since,
            down_since=row.down_since,
            next_probe_at=None if row.state == CircuitState.CLOSED else row.probe_at,
            failed_probes=row.failed_probes,
            last_error=row.last_error,
            last_error_at=row.last_error_at,
        )
        for row in rows
    }
    return {name: known.get(name, CLOSED) for name in names}


async def list_routes(*, session: AsyncSession, routes: Sequence[Route]) -> list[RoutePublic]:
    """Every configured route in priority order, with its health."""
    health = await route_health(session=session, names=[route.name for route in routes])
    return [
        RoutePublic.model_validate({**route.public, "health": health[route.name]})
        for route in routes
    ]
