"""The worker's periodic jobs: each runs at start, then every interval until the worker stops;
a failed round is logged and the next one goes on. Several workers may run them at once: the
reconciliation is idempotent by workflow id, the fold takes an advisory lock."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import sqlalchemy as sa
from temporalio.client import Client
from temporalio.service import RPCError

from core.db import SessionFactory
from core.settings import Settings
from core.stats import compact_counts
from upkeep.reconcile import RECONCILE_INTERVAL, Reconciler

log = logging.getLogger(__name__)

# The count rows are folded this often; between two folds each statement that changed
# messages has added a row or a few.
FOLD_INTERVAL = timedelta(minutes=1)
# What a round may fail with without stopping its loop: the database or Temporal unreachable.
TRANSIENT = (RPCError, OSError, sa.exc.SQLAlchemyError)


async def every(
    interval: timedelta, stop: asyncio.Event, job: Callable[[], Awaitable[object]], *, what: str
) -> None:
    """Runs `job` now, then every `interval` until `stop`."""
    while not stop.is_set():
        try:
            await job()
        except TRANSIENT as error:
            log.error("%s failed: %s", what, error)
        try:
            await asyncio.wait_for(stop.wait(), interval.total_seconds())
        except TimeoutError:
            pass


async def run_upkeep(
    *, sessions: SessionFactory, temporal: Client, settings: Settings, stop: asyncio.Event
) -> None:
    """Every periodic job of a worker, until `stop`."""
    reconciler = Reconciler(sessions=sessions, temporal=temporal, settings=settings)

    async def fold_counts() -> None:
        async with sessions() as session:
            await compact_counts(session)

    await asyncio.gather(
        every(RECONCILE_INTERVAL, stop, reconciler.reconcile, what="reconciliation"),
        every(FOLD_INTERVAL, stop, fold_counts, what="folding message counts"),
    )
