from typing import Annotated

from fastapi import APIRouter, Query

from api import services
from api.auth import guarded
from api.deps import SessionDep
from api.schemas import OverallStats
from core.auth import Permission

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=OverallStats, **guarded(Permission.DISPATCHES_READ))
async def overall_stats(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> OverallStats:
    """Every dispatch (a page of them, by id) with its messages counted by status, and the
    totals over all messages."""
    return await services.overall_stats(session=session, limit=limit, offset=offset)
