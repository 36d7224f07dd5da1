import sqlalchemy as sa
from fastapi import APIRouter, Response, status

from api.deps import SessionDep, TemporalClientDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(session: SessionDep, temporal: TemporalClientDep, response: Response) -> Health:
    """Whether the database and Temporal answer; 503 when one of them does not."""
    database = temporal_state = "ok"
    try:
        await session.execute(sa.text("SELECT 1"))
    except Exception as error:
        database = f"unavailable: {type(error).__name__}"
    try:
        await temporal.service_client.check_health()
    except Exception as error:
        temporal_state = f"unavailable: {type(error).__name__}"
    healthy = database == temporal_state == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded", database=database, temporal=temporal_state
    )
