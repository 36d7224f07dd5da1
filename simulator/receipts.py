"""Delivery receipts of one simulated gateway: what it decides for each accepted message, and
the background task that posts the receipts (one per SMS part) back to the service.

A receipt is the JSON object
`{"id": msgId, "status": ..., "part": k, "parts": n, "error": str | null, "at": ISO time,
"route": gateway name}`; a request carries one object when `receipt_batch_size` is 1, else a
list of up to that many. A message accepted twice is reported once per acceptance, each time
with the statuses decided at its first acceptance.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
import time
from array import array
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from core.segments import measure

if TYPE_CHECKING:
    from simulator.gateways import SimulatorConfig

logger = logging.getLogger(__name__)

DELIVERED = "delivered"
# The failing statuses, each with the error texts it is drawn with (SMPP-like DLR codes).
FAILURES: dict[str, tuple[str, ...]] = {
    "undelivered": (
        "DLR 01 absent subscriber",
        "DLR 08 handset busy",
        "DLR 09 call barred",
    ),
    "expired": ("DLR 27 validity period expired",),
    "rejected": ("DLR 11 unknown subscriber", "DLR 13 number blacklisted"),
}
_FAILING_STATUSES = tuple(FAILURES)

# A post that fails with a connection error or a 5xx is tried this many times in all, waiting
# _BACKOFF_SECONDS, then twice that, and so on, between tries.
POST_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.05
_POST_TIMEOUT_SECONDS = 5.0
# Lists posted at once by the background task: a slow receiver holds the gathering back.
_CONCURRENT_POSTS = 4
# How much of a refused post's body goes to the log.
_LOGGED_BODY = 500

# (order of decision, final status, failing part (0: none), error) of one msgId: a plain tuple
# of atoms, which the GC does not track (see gateways.MessageRecord).
Decision = tuple[int, str, int, str | None]
Receipt = dict[str, Any]


@functools.lru_cache(maxsize=1024)
def _parts(text: str) -> int:
    """The SMS parts of a text: a dispatch sends one text many times."""
    return measure(text).segments


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class Receipts:
    """The receipts of one gateway: decisions by msgId, receipts waiting for their delay, the
    poster task (started on the first receipt queued) and the counters of posts."""

    __slots__ = (
        "_client",
        "_config",
        "_decisions",
        "_order",
        "_pending",
        "_posts",
        "_rng",
        "_route",
        "_seq",
        "_slots",
        "_task",
        "_wakeup",
        "by_status",
        "failed",
        "failed_posts",
        "posted",
    )

    def __init__(self, route: str, config: SimulatorConfig) -> None:
        self._route = route
        self._config = config
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Made again with each task: both bind to the event loop that first waits on them.
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(_CONCURRENT_POSTS)
        self._seq = itertools.count()
        # (due on the loop's clock, sequence, receipt): the sequence keeps equal dues in the
        # order they were queued, which is the shuffled order of parts. Cleared, never
        # replaced: the task holds it.
        self._pending: list[tuple[float, int, Receipt]] = []
        self.reset()

    @property
    def running(self) -> bool:
        """Whether the poster task is running."""
        return self._task is not None and not self._task.done()

    def configure(self, config: SimulatorConfig) -> None:
        """Take a new config; switching receipts off drops those waiting and stops the task."""
        self._config = config
        if config.receipts_url is None:
            self._pending.clear()
            if self._task is not None:
                self._task.cancel()
                self._task = None

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def reset(self) -> None:
        """Forget decisions, counters and the receipts waiting (posts in flight still count)."""
        self._decisions: dict[int, Decision] = {}
        # msgIds in the order decided, for paging: 8 bytes each, nothing for the GC to track.
        self._order = array("q")
        self._pending.clear()
        self.posted = 0
        self.failed = 0
        self.failed_posts = 0
        self.by_status: dict[str, int] = {}

    def outcome(self, msg_id: int) -> str | None:
        """The final status decided for msgId: delivered, or its failing part's status."""
        decision = self._decisions.get(msg_id)
        return None if decision is None else decision[1]

    def outcomes(self, *, after_id: int | None = None, limit: int | None = None) -> dict[int, str]:
        """Final statuses in the order decided; after_id starts after it (KeyError if unknown)."""
        start = 0 if after_id is None else self._decisions[after_id][0] + 1
        ids = self._order[start:] if limit is None else self._order[start : start + limit]
        decisions = self._decisions
        return {msg_id: decisions[msg_id][1] for msg_id in ids}

    def stats(self) -> dict[str, Any]:
        return {
            "receipts_posted": self.posted,
            "receipts_failed": self.failed,
            "receipts_failed_posts": self.failed_posts,
            "receipts_pending": len(self._pending),
            "receipts_by_status": dict(sorted(self.by_status.items())),
        }

    async def accepted(self, msg_id: int, text: str) -> None:
        """Report one acceptance of msgId: queue its receipts, or post them now and return
        once that post is done (receipt_before_answer_rate)."""
        config = self._config
        rng = self._rng
        parts = _parts(text)
        decision = self._decisions.get(msg_id)
        if decision is None:
            decision = self._decide(msg_id, parts)
        _, status, failing, error = decision
        failing = min(failing, parts)  # a later send of the same msgId may be shorter
        before_rate = config.receipt_before_answer_rate
        before = bool(before_rate) and rng.random() < before_rate
        loop = asyncio.get_running_loop()
        now, wall = loop.time(), time.time()
        order = list(range(1, parts + 1))
        rng.shuffle(order)
        at_once: list[Receipt] = []
        for part in order:
            delay = 0.0 if before else self._delay()
            failed = part == failing
            receipt = {
                "id": msg_id,
                "status": status if failed else DELIVERED,
                "part": part,
                "parts": parts,
                "error": error if failed else None,
                "at": _iso(wall + delay),
                "route": self._route,
            }
            if before:
                at_once.append(receipt)
            else:
                self._queue(now + delay, receipt)
            if config.receipt_duplicate_rate and rng.random() < config.receipt_duplicate_rate:
                # The copy comes one more delay later: a gateway re-posting what it sent.
                self._queue(now + delay + self._delay(), receipt)
        size = config.receipt_batch_size
        for start in range(0, len(at_once), size):
            await self._post(at_once[start : start + size])

    def _decide(self, msg_id: int, parts: int) -> Decision:
        config = self._config
        rng = self._rng
        index = len(self._order)
        decision: Decision = (index, DELIVERED, 0, None)
        if config.undelivered_rate and rng.random() < config.undelivered_rate:
            status = rng.choice(_FAILING_STATUSES)
            decision = (index, status, rng.randint(1, parts), rng.choice(FAILURES[status]))
        self._decisions[msg_id] = decision
        self._order.append(msg_id)
        return decision

    def _delay(self) -> float:
        """One receipt's delay in seconds, drawn from [receipt_delay_min_ms, ..._max_ms]."""
        low, high = self._config.receipt_delay_min_ms, self._config.receipt_delay_max_ms
        # Equal bounds draw nothing, so that a fixed delay leaves the stream to the statuses.
        return (low if high <= low else self._rng.uniform(low, high)) / 1000

    def _queue(self, due: float, receipt: Receipt) -> None:
        entry = (due, next(self._seq), receipt)
        heapq.heappush(self._pending, entry)
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(_CONCURRENT_POSTS)
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"receipts-{self._route}"
            )
        elif self._pending[0] is entry:
            # Due before every other: the task's wait is too long now. A receipt due later
            # changes nothing the task waits for (waking it for each cost more CPU than the
            # rest of a receipt).
            self._wakeup.set()

    async def _wait(self, seconds: float) -> None:
        """Until a receipt is queued, or `seconds` have passed (a negative or inf: no limit)."""
        self._wakeup.clear()
        try:
            async with asyncio.timeout(None if seconds == float("inf") else max(seconds, 0)):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _run(self) -> None:
        """Gather the receipts that are due into lists and post each list in a task."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        while True:
            now = loop.time()
            if not pending or pending[0][0] > now:
                await self._wait(pending[0][0] - now if pending else float("inf"))
                continue
            config = self._config
            size = config.receipt_batch_size
            deadline = now + config.receipt_batch_ms / 1000 if size > 1 else now
            batch: list[Receipt] = []
            while True:
                while pending and pending[0][0] <= now and len(batch) < size:
                    batch.append(heapq.heappop(pending)[2])
                if len(batch) >= size or now >= deadline:
                    break
                await self._wait(min(deadline, pending[0][0] if pending else deadline) - now)
                now = loop.time()
            if not batch:  # dropped by a reset or by switching receipts off meanwhile
                continue
            slots = self._slots
            await slots.acquire()
            task = loop.create_task(self._post(batch))
            self._posts.add(task)
            task.add_done_callback(functools.partial(self._posted, slots))

    def _posted(self, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._posts.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("receipts of %s: post crashed", self._route, exc_info=task.exception())

    async def _post(self, batch: list[Receipt]) -> None:
        """POST one list (or one receipt when receipt_batch_size is 1), retrying transient
        failures; the outcome goes to the counters."""
        config = self._config
        url = config.receipts_url
        if url is None or not batch:
            return
        headers = {}
        if config.receipts_token is not None:
            headers["Authorization"] = f"Bearer {config.receipts_token}"
        body: Any = batch[0] if config.receipt_batch_size == 1 and len(batch) == 1 else batch
        client = self._client
        if client is None:
            client = self._client = httpx.AsyncClient(timeout=_POST_TIMEOUT_SECONDS)
        why = ""
        for attempt in range(POST_ATTEMPTS):
            if attempt:
                await asyncio.sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                response = await client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                self.posted += len(batch)
                for receipt in batch:
                    status = receipt["status"]
                    self.by_status[status] = self.by_status.get(status, 0) + 1
                return
            why = f"{response.status_code} {response.text[:_LOGGED_BODY]}"
            if response.status_code < 500:  # refused: trying again would not change it
                break
        self.failed_posts += 1
        self.failed += len(batch)
        logger.warning(
            "receipts of %s: post of %d receipts to %s failed: %s",
            self._route,
            len(batch),
            url,
            why,
        )

    async def close(self) -> None:
        """Stop the poster and the posts in flight, and close the HTTP client; the next
        receipt queued starts them again."""
        tasks = [*self._posts, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
