"""One measured dispatch: N clients, one dispatch to all of them, from the POST to completed."""

import logging
import time
from datetime import UTC, datetime, timedelta

from bench import data
from bench.figures import DispatchFigures, DispatchScenario
from bench.history import CLIENT_SAMPLE, dispatch_history
from bench.rig import Rig, await_completed, create_dispatch, delete_dispatch, dispatch_body, prepare

log = logging.getLogger(__name__)


async def run_dispatch(rig: Rig, scenario: DispatchScenario) -> DispatchFigures:
    insert_s = await prepare(
        rig, clients=scenario.clients, zones=[data.DEFAULT_ZONE], latency_ms=scenario.latency_ms
    )
    now = datetime.now(UTC)
    body = dispatch_body(
        start_at=now,
        end_at=now + timedelta(hours=scenario.end_after_hours),
        shape=scenario.shape,
    )
    log.info(
        "dispatch to %d clients at %g ms (shape %s)",
        scenario.clients,
        scenario.latency_ms,
        scenario.shape or "not sent",
    )
    started = time.monotonic()
    created = await create_dispatch(rig, body)
    dispatch_id = int(created["id"])
    completed = await await_completed(rig, dispatch_id, timeout_s=scenario.timeout_s)
    elapsed = time.monotonic() - started
    if not completed:
        log.warning("dispatch %d not completed after %.0f s", dispatch_id, elapsed)

    figures = await _figures(
        rig,
        scenario,
        dispatch_id,
        delivery=created.get("delivery"),
        insert_s=insert_s,
        completed=completed,
        elapsed=elapsed,
    )
    if not completed:
        # Left running, it would send into the next scenario's figures.
        await delete_dispatch(rig, dispatch_id)
    return figures


async def _figures(
    rig: Rig,
    scenario: DispatchScenario,
    dispatch_id: int,
    *,
    delivery: str | None,
    insert_s: float,
    completed: bool,
    elapsed: float,
) -> DispatchFigures:
    dispatch = await data.load_dispatch(rig.db, dispatch_id)
    messages, db_rate = await data.db_rate(rig.db, dispatch)
    opens = data.earliest_instants(dispatch, [data.DEFAULT_ZONE])
    delays, _ = await data.delays(rig.db, dispatch_id, opens)
    sample = await data.first_client_ids(rig.db, dispatch_id, CLIENT_SAMPLE)
    history = await dispatch_history(
        rig.temporal, dispatch_id=dispatch_id, zones=[data.DEFAULT_ZONE], client_ids=sample
    )
    return DispatchFigures(
        scenario=scenario,
        dispatch_id=dispatch_id,
        delivery=delivery,
        insert_s=round(insert_s, 2),
        completed=completed,
        timed_out=not completed,
        elapsed_s=round(elapsed, 2),
        messages=messages,
        messages_per_s=round(messages / elapsed, 2) if completed else None,
        db_messages_per_s=round(db_rate, 2) if completed and db_rate is not None else None,
        statuses=await data.status_counts(rig.db, dispatch_id),
        delays=delays,
        history=history,
        peak_rss_mb=rig.memory.peaks_mb(),
        remote=await rig.simulator.figures(),
    )
