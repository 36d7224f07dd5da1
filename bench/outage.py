"""The outage run: the remote goes down in the middle of a dispatch, then comes back.

Every message must end sent, none twice but those in flight when the outage began, and the
per-client delivery workflows must number about the messages whose send failed, not the
audience.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import data
from bench.rig import Rig, await_completed, create_dispatch, dispatch_body, prepare

log = logging.getLogger(__name__)


@dataclass
class OutageFigures:
    clients: int
    outage_s: float
    down_after_accepted: int
    completed: bool
    elapsed_s: float
    statuses: dict[str, int]
    accepted: int
    unique_accepted: int
    duplicates: int
    failed_during_outage: int  # requests the remote refused while down
    delivery_workflows: int | None  # `dispatch-<id>-client-*` workflows
    messages_retried: int  # messages with more than one attempt


async def _accepted(rig: Rig) -> int:
    return (await rig.simulator.figures()).accepted


async def _set_outage(rig: Rig, down: bool) -> None:
    response = await rig.http.patch(f"{rig.simulator.base_url}/_sim/config", json={"outage": down})
    response.raise_for_status()


async def run_outage(rig: Rig, *, clients: int, outage_s: float, timeout_s: float) -> OutageFigures:
    await prepare(rig, clients=clients, zones=[data.DEFAULT_ZONE], latency_ms=0)
    now = datetime.now(UTC)
    body = dispatch_body(start_at=now, end_at=now + timedelta(hours=3), shape=None)
    started = time.monotonic()
    dispatch_id = int((await create_dispatch(rig, body))["id"])
    half = clients // 2
    while await _accepted(rig) < half:
        await asyncio.sleep(0.02)
    down_after = await _accepted(rig)
    await _set_outage(rig, True)
    log.info("remote down after %d accepted, for %g s", down_after, outage_s)
    await asyncio.sleep(outage_s)
    before_up = await rig.simulator.figures()
    await _set_outage(rig, False)
    log.info("remote back")
    completed = await await_completed(rig, dispatch_id, timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    remote = await rig.simulator.figures()
    retried = int(
        await rig.db.fetchval(
            "SELECT count(*) FROM message WHERE dispatch_id = $1 AND attempts > 1", dispatch_id
        )
    )
    return OutageFigures(
        clients=clients,
        outage_s=outage_s,
        down_after_accepted=down_after,
        completed=completed,
        elapsed_s=round(elapsed, 2),
        statuses=await data.status_counts(rig.db, dispatch_id),
        accepted=remote.accepted,
        unique_accepted=remote.unique_accepted,
        duplicates=remote.duplicates,
        failed_during_outage=before_up.received - before_up.accepted,
        delivery_workflows=await _count(
            rig, f'WorkflowId STARTS_WITH "dispatch-{dispatch_id}-client-"'
        ),
        messages_retried=retried,
    )


async def _count(rig: Rig, query: str) -> int | None:
    try:
        return (await rig.temporal.count_workflows(query)).count
    except Exception:
        log.exception("visibility query refused: %s", query)
        return None


def outage_lines(figures: OutageFigures) -> list[str]:
    f: Any = figures
    return [
        f"Outage run: {f.clients} clients at 0 ms, the remote down for {f.outage_s:g} s after "
        f"{f.down_after_accepted} accepted",
        f"  {'completed' if f.completed else 'TIMEOUT'} in {f.elapsed_s} s; statuses {f.statuses}",
        f"  remote: {f.accepted} accepted, {f.unique_accepted} unique, {f.duplicates} duplicates;"
        f" {f.failed_during_outage} requests refused while down",
        f"  delivery workflows (dispatch-N-client-*): {f.delivery_workflows}; messages sent "
        f"after more than one attempt: {f.messages_retried}",
    ]
