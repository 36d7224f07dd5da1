"""One measured dispatch: N clients, one dispatch to all of them, from the POST to completed,
on `scenario.workers` worker processes (with `scenario.routes`, through those routes to named
gateways of the simulator); then each worker's share (its /metrics), each route's (its
gateway's counters, and the messages recorded on it) and the dispatch's actions (its
histories, and the server's counter over it)."""

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from temporalio.service import RPCError

from bench import data
from bench.actions import dispatch_actions, settle
from bench.figures import ActionFigures, DispatchFigures, DispatchScenario, WorkerShare
from bench.history import CLIENT_SAMPLE, dispatch_history
from bench.rig import Rig, await_completed, create_dispatch, delete_dispatch, dispatch_body, prepare
from bench.routes import prepare_gateways, route_shares, routes_env
from bench.scrape import ServerCounters, messages_sent, scrape, settled_server_counters
from bench.stack import NAMESPACE
from bench.tracing import tracing_env

log = logging.getLogger(__name__)


def service_env(scenario: DispatchScenario) -> dict[str, str] | None:
    """The settings of the workers and the API for this scenario (None: the stack's)."""
    env = routes_env(scenario.routes) if scenario.routes else {}
    if scenario.frequency_cap:
        env["FREQUENCY_CAP"] = scenario.frequency_cap
    if scenario.tracing:
        env |= tracing_env(scenario.tracing)
    return env or None


async def run_dispatch(
    rig: Rig,
    scenario: DispatchScenario,
    *,
    before_post: Callable[[], Awaitable[None]] | None = None,
) -> DispatchFigures:
    """`before_post`: run once the stack is prepared, right before the dispatch's POST (e.g.
    switches of the simulator, which `prepare` resets)."""
    insert_s = await prepare(
        rig,
        clients=scenario.clients,
        zones=[data.DEFAULT_ZONE],
        latency_ms=scenario.latency_ms,
        workers=scenario.workers,
        service_env=service_env(scenario),
    )
    if scenario.routes:
        await prepare_gateways(rig, scenario.routes, latency_ms=scenario.latency_ms)
    if before_post is not None:
        await before_post()
    now = datetime.now(UTC)
    body = dispatch_body(
        start_at=now,
        end_at=now + timedelta(hours=scenario.end_after_hours),
        shape=scenario.shape,
        text=scenario.text,
    )
    log.info(
        "dispatch to %d clients (%s, shape %s) on %d worker(s)",
        scenario.clients,
        scenario.name,
        scenario.shape or "not sent",
        scenario.workers,
    )
    server_before = await settled_server_counters(
        rig.http, rig.stack.temporal_metrics_url, NAMESPACE
    )
    cpu_before = await cpu_seconds(rig)
    started = time.monotonic()
    created = await create_dispatch(rig, body)
    dispatch_id = int(created["id"])
    completed = await await_completed(rig, dispatch_id, timeout_s=scenario.timeout_s)
    elapsed = time.monotonic() - started
    cpu_after = await cpu_seconds(rig)
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
    figures.cpu_s = {
        name: round(cpu_after[name] - before, 2)
        for name, before in cpu_before.items()
        if name in cpu_after
    }
    if scenario.routes:
        figures.routes, figures.remote = await route_shares(rig, dispatch_id, scenario.routes)
    # Before the next restart: each worker's counters are its own since it started.
    figures.workers = await worker_shares(rig)
    if scenario.count_actions:
        figures.actions = await _actions(rig, dispatch_id, figures.messages, server_before)
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


async def cpu_seconds(rig: Rig) -> dict[str, float]:
    """`process_cpu_seconds_total` of each worker process and of the API, by name; one whose
    page cannot be read is left out."""
    urls = {name: rig.stack.worker_metrics_url(name) for name in rig.stack.worker_names}
    urls["api"] = f"{rig.stack.api_url}/metrics"
    found: dict[str, float] = {}
    for name, url in urls.items():
        try:
            samples = await scrape(rig.http, url)
        except (httpx.HTTPError, ValueError) as error:
            log.warning("CPU seconds of %s not read: %s", name, error)
            continue
        cpu = [s.value for s in samples if s.name == "process_cpu_seconds_total"]
        if cpu:
            found[name] = cpu[0]
    return found


async def worker_shares(rig: Rig) -> list[WorkerShare]:
    """Each running worker's sent messages, from its /metrics, and its share of them all."""
    names = rig.stack.worker_names
    counts = [await messages_sent(rig.http, rig.stack.worker_metrics_url(name)) for name in names]
    total = sum(count for count in counts if count is not None)
    return [
        WorkerShare(
            worker=name,
            sent=count,
            share_pct=round(100 * count / total, 1) if count is not None and total else None,
        )
        for name, count in zip(names, counts, strict=True)
    ]


async def _actions(
    rig: Rig, dispatch_id: int, messages: int, server_before: ServerCounters | None
) -> ActionFigures | None:
    """The dispatch's actions; None (and a warning) if its histories cannot be read."""
    settled = await settle(rig.temporal, dispatch_id)
    server_after = await settled_server_counters(
        rig.http, rig.stack.temporal_metrics_url, NAMESPACE
    )
    server = (
        server_after.minus(server_before)
        if server_after is not None and server_before is not None
        else None
    )
    try:
        figures = await dispatch_actions(
            rig.temporal, dispatch_id=dispatch_id, messages=messages, server=server
        )
    except RPCError as error:
        log.warning("actions of dispatch %d not counted: %s", dispatch_id, error)
        return None
    if not settled:
        figures.note = " ".join(
            filter(None, [figures.note, "some workflows were still running when counted"])
        )
    return figures
