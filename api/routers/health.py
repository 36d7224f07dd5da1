from fastapi import APIRouter, Request, Response, status

from api.deps import TemporalClientDep
from api.schemas.health import Health, Liveness
from core.health import dependencies

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """The process serves (for a liveness probe: it asks nothing of PostgreSQL or Temporal,
    so that their outage restarts nothing)."""
    return Liveness(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(request: Request, temporal: TemporalClientDep, response: Response) -> Health:
    """Whether PostgreSQL and Temporal answer (for a readiness probe and a load balancer);
    503 when one of them does not."""
    states = await dependencies(request.app.state.database.sessions, temporal)
    healthy = all(state == "ok" for state in states.values())
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "degraded", **states)


@router.get("/healthz", response_model=Health)
async def healthz(request: Request, temporal: TemporalClientDep, response: Response) -> Health:
    """The same as /readyz (kept for what already calls it)."""
    return await readyz(request, temporal, response)
