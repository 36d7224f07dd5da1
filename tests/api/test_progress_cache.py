"""The admin page's shared progress: one query round per dispatch at a time, answers served
fresh, then stale while a refresh runs, then asked again; against the dev server."""

import asyncio
from typing import Any

from temporalio.testing import WorkflowEnvironment

from api.schemas.dispatches import DispatchProgressPublic
from api.services.progress import FRESH_SECONDS, STALE_SECONDS, ProgressCache, dispatch_progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_watchers_share_one_query_round_and_stale_answers_refresh_behind(
    dev_env: WorkflowEnvironment,
) -> None:
    asked: list[int] = []

    async def ask(**kwargs: Any) -> DispatchProgressPublic:
        asked.append(kwargs["dispatch_id"])
        return await dispatch_progress(**kwargs)

    clock = Clock()
    cache = ProgressCache(dev_env.client, clock=clock, ask=ask)
    # Ten watchers at once, none answered yet: one round (no workflow: not available).
    answers = await asyncio.gather(*(cache.get(424242) for _ in range(10)))
    assert asked == [424242]
    assert {progress.available for _, progress in answers} == {False}
    first = answers[0]

    clock.now += FRESH_SECONDS - 1
    assert await cache.get(424242) == first and asked == [424242]

    # Stale: served as it is, while one refresh asks behind it.
    clock.now += 2
    assert await cache.get(424242) == first
    assert await cache.get(424242) == first
    async with asyncio.timeout(10):
        while (refreshed := await cache.get(424242)) == first:
            await asyncio.sleep(0.05)
    assert asked == [424242, 424242]
    assert refreshed[0] > first[0]

    # Unwatched past STALE_SECONDS: the next watcher waits for a fresh answer.
    clock.now += STALE_SECONDS + 1
    await cache.get(424242)
    assert asked == [424242, 424242, 424242]
    # Another dispatch has answers of its own.
    await cache.get(7)
    assert asked[-1] == 7
