"""Receipts of concurrent requests applied together: a gateway that posts each receipt alone, from
many connections, would otherwise cost a transaction (a lock, an insert, a decision and a
commit) per receipt, which is most of what the database spends on them.

Requests queue their receipts; a few appliers take what is queued (whole requests, up to
RECEIPTS_MAX receipts at once) and apply it in one transaction, in the order it came, then
answer each request with its own receipts' outcomes. Nothing waits for a timer: a receipt that
comes alone is applied at once, and the batches grow only while the appliers are busy, so that
the load itself sets their size. A request's receipts are never split across two
transactions, so a request is still applied whole or not at all; a failure of the
transaction is the answer of every request in it (PostgreSQL unreachable: DatabaseUnavailable,
a 503, to each; the appliers go on and the next batch tries again).
"""

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from api.schemas.receipts import RECEIPTS_MAX, Receipt, ReceiptsAnswer
from api.services import receipts as receipts_service
from core import metrics
from core.db import SessionFactory, database_unavailable
from core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Transactions of receipts at once per API process: one can lock and insert while another
# waits for its commit.
APPLIERS = 2
# Message ids named in the line that says a batch failed.
SHOWN_IDS = 20


@dataclass
class Queued:
    receipts: Sequence[Receipt]
    answer: asyncio.Future[ReceiptsAnswer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ReceiptBatches:
    """The queue of receipts waiting to be applied, and its appliers (`run`, for as long as the
    API runs)."""

    def __init__(
        self, sessions: SessionFactory, *, most: int = RECEIPTS_MAX, appliers: int = APPLIERS
    ) -> None:
        self.sessions = sessions
        self.most = most
        self.appliers = appliers
        self._queue: deque[Queued] = deque()
        self._wake = asyncio.Condition()

    async def apply(self, receipts: Sequence[Receipt]) -> ReceiptsAnswer:
        """Queues a request's receipts; what became of them once applied."""
        queued = Queued(receipts)
        self._queue.append(queued)
        async with self._wake:
            self._wake.notify()
        return await queued.answer

    async def run(self) -> None:
        """The appliers, until cancelled."""
        await asyncio.gather(*(self._applier() for _ in range(self.appliers)))

    def _take(self) -> list[Queued]:
        """Whole requests from the head of the queue, up to `most` receipts (at least one
        request, however large)."""
        batch = [self._queue.popleft()]
        count = len(batch[0].receipts)
        while self._queue and count + len(self._queue[0].receipts) <= self.most:
            queued = self._queue.popleft()
            batch.append(queued)
            count += len(queued.receipts)
        return batch

    async def _applier(self) -> None:
        while True:
            async with self._wake:
                await self._wake.wait_for(lambda: bool(self._queue))
                batch = self._take()
            await self._apply(batch)

    async def _apply(self, batch: list[Queued]) -> None:
        receipts = [receipt for queued in batch for receipt in queued.receipts]
        metrics.RECEIPT_BATCH_RECEIPTS.observe(len(receipts))
        try:
            async with self.sessions() as session:
                outcomes = await receipts_service.apply_receipts(session=session, receipts=receipts)
        except asyncio.CancelledError:
            for queued in batch:
                queued.answer.cancel()
            raise
        except Exception as error:  # every request of the batch answers it
            shown = sorted({receipt.id for receipt in receipts})
            log.warning(
                "receipts of %d requests not applied (message ids %s%s): %r",
                len(batch),
                ", ".join(map(str, shown[:SHOWN_IDS])),
                " ..." if len(shown) > SHOWN_IDS else "",
                error,
            )
            # Classified here, while its traceback still shows the driver: the shared error's
            # traceback is reset once the first request's answer is made of it.
            outage = database_unavailable(error)
            for queued in batch:
                if not queued.answer.done():
                    queued.answer.set_exception(DatabaseUnavailable() if outage else error)
            return
        start = 0
        for queued in batch:
            end = start + len(queued.receipts)
            if not queued.answer.done():  # its caller may have gone
                answer = receipts_service.answer_of(queued.receipts, outcomes[start:end])
                queued.answer.set_result(answer)
            start = end
