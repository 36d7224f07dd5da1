from fastapi import APIRouter

from api import services
from api.auth import guarded
from api.deps import SessionDep
from api.paging import PagingDep
from api.schemas import OverallStats
from core.auth import Permission

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=OverallStats, **guarded(Permission.DISPATCHES_READ))
async def overall_stats(
    session: SessionDep,
    paging: PagingDep,
) -> OverallStats:
    """Every dispatch (a page of them, by id) with its messages counted by status, and the
    totals over all messages."""
    return await services.overall_stats(session=session, paging=paging)
