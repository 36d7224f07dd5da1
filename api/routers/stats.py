from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from sqlmodel import col, select

from api.deps import SessionDep
from api.schemas import DispatchStats, OverallStats, StatusCounts
from core.models import Dispatch
from core.stats import counts_by_dispatch, total_counts

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=OverallStats)
async def overall_stats(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> OverallStats:
    """Every dispatch (a page of them, by id) with its messages counted by status, and the
    totals over all messages."""
    dispatches = (
        await session.execute(
            select(Dispatch.id, Dispatch.status)
            .order_by(col(Dispatch.id))
            .limit(limit)
            .offset(offset)
        )
    ).all()
    counts = await counts_by_dispatch(session=session, dispatch_ids=[d.id for d in dispatches])
    dispatch_count = (
        await session.execute(sa.select(sa.func.count()).select_from(Dispatch))
    ).scalar_one()
    return OverallStats(
        dispatches=[
            DispatchStats(dispatch_id=d.id, status=d.status, messages=StatusCounts.of(counts[d.id]))
            for d in dispatches
        ],
        totals=StatusCounts.of(await total_counts(session=session)),
        dispatch_count=dispatch_count,
    )
