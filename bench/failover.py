"""The failover run: two routes that both serve everyone, `a` (priority 1) and `b` (2), each to
a gateway of its own; a quarter into the dispatch, gateway `a` goes down for a few seconds, then
comes back.

Mode "503": `a` answers every send with 503 (it certainly did not take them): each message
moves to `b` at once, `a`'s circuit opens, and a probe closes it once `a` answers again. Mode
"hang": `a` holds every send longer than the workers' send timeout (then a 503 nobody reads): a
timeout may be a message taken, so those messages stay on `a` and are retried there only.

The times come from the gateways' own records of each acceptance (epoch seconds, the clock of
this machine, as the bench's), not from polling: from the switch to the first acceptance at `b`,
from the end of the outage to the first at `a` again. Every id accepted at both gateways is a
message sent twice, which routing must never do.
"""

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

from bench import data
from bench.remote import Acceptance, SimulatorControl
from bench.rig import Rig, await_completed, create_dispatch, delete_dispatch, dispatch_body, prepare
from bench.routes import failover_routes, gateway_of, prepare_gateways, routes_env

log = logging.getLogger(__name__)

Mode = Literal["503", "hang"]
MODES: tuple[Mode, ...] = ("503", "hang")

# The trigger's poll of gateway `a`'s counters.
POLL_SECONDS = 0.02
# The hang run's send timeout, shorter than the service's default 10 s so that the run stays
# short, and how long `a` holds each send: longer, so that every one times out.
HANG_SEND_TIMEOUT_S = 2.0
HANG_SECONDS = 3.0
# The worker log's loggers that tell the routes' story: circuits opening, probes, closing,
# failovers (one line per message moved), and the cohort's own breaker (its warnings).
ROUTE_LOGGERS = ("activities.circuits", "activities.routing", "activities.batch")
FAILOVER_LINE = "did not take it"
MAX_LOG_LINES = 30
# A pause in acceptances at both gateways together longer than this is listed.
GAP_SECONDS = 0.5
RETRIED_SAMPLE = 10
# Concurrent lookups of one message at a gateway.
LOOKUPS = 50


@dataclass(frozen=True)
class FailoverSettings:
    clients: int
    latency_ms: float  # of both gateways
    outage_s: float
    mode: Mode
    timeout_s: float
    workers: int


@dataclass
class GatewayFigures:
    """One gateway over the failover run."""

    gateway: str
    received: int  # requests, refused and timed out ones included
    accepted: int  # duplicates included
    unique_accepted: int
    duplicates: int
    by_status: dict[str, int]  # answers by HTTP status (a hung request counts once answered)
    accepted_during_outage: int  # between the switch down and the switch up
    sent: int  # messages of the dispatch `sent` with message.route = this gateway's route


@dataclass
class FailoverFigures:
    mode: str  # "503" or "hang"
    clients: int
    latency_ms: float
    outage_s: float
    send_timeout_s: float | None  # SEND_TIMEOUT_SECONDS of the run; None: the default
    hang_seconds: float | None  # how long `a` held each send (mode hang)
    dispatch_id: int
    down_after_accepted: int  # accepted at `a` when it went down
    completed: bool
    elapsed_s: float  # POST to completed (or to the timeout)
    statuses: dict[str, int]
    # Seconds from the switch down (the PATCH sent) to the first acceptance at `b`; None: none.
    to_second_route_s: float | None
    # Seconds from the switch up (the PATCH sent) to the first acceptance at `a` after it.
    back_to_first_route_s: float | None
    switch_round_trips_ms: list[float]  # the two PATCHes, down and up
    gateways: list[GatewayFigures]
    at_both: int  # ids accepted at both gateways: messages sent twice (must be 0)
    recorded_elsewhere: int  # messages sent whose message.route is not where they were accepted
    retried: int  # messages with more than one attempt (a failover within one attempt is one)
    retried_by_route: dict[str, int]
    # Messages retried on `a` (pinned there by a timeout) that `b` accepted too (must be 0).
    pinned_at_b: int
    # Seconds from the switch up to the last acceptance at `a` of a message retried there, and
    # to the dispatch's last acceptance anywhere; None: no such message.
    pinned_done_s: float | None
    last_accepted_s: float | None
    # Messages accepted at `b` that `a` had received a request for: after a 503 (mode 503)
    # that is the failover; after a timeout (mode hang) a message `a` may have taken went
    # through another gateway (must be 0).
    received_at_a_accepted_at_b: int
    failovers_logged: int  # "route a did not take it ...: on to route b" lines of the workers
    # Seconds from the switch down to the circuit's first "opened" line; None: not logged.
    circuit_opened_s: float | None
    # Pauses of more than GAP_SECONDS with no acceptance at either gateway, between the
    # dispatch's first and last: [seconds from the switch down, length in seconds].
    gaps: list[list[float]] = field(default_factory=list)
    # Up to RETRIED_SAMPLE messages retried that did not end on `a`: id, route, attempts,
    # requests `a` received for it, its last error.
    retried_elsewhere: list[dict[str, Any]] = field(default_factory=list)
    circuit_log: list[str] = field(default_factory=list)  # "+1.23 s <line>", from the switch


def _first_after(acceptances: list[Acceptance], instant: float) -> float | None:
    return next((a.at - instant for a in acceptances if a.at >= instant), None)


def _gaps(acceptances: list[Acceptance], instant: float) -> list[list[float]]:
    """The pauses of more than GAP_SECONDS between acceptances, from `instant`."""
    times = sorted(a.at for a in acceptances)
    return [
        [round(before - instant, 2), round(after - before, 2)]
        for before, after in pairwise(times)
        if after - before > GAP_SECONDS
    ]


def _tells(entry: dict[str, Any]) -> bool:
    """Whether a line of ROUTE_LOGGERS goes into the story (not each message's failover, not
    each batch's summary)."""
    if entry.get("logger") == "activities.batch":
        return entry.get("level") == "WARNING"
    return FAILOVER_LINE not in str(entry.get("message"))


def _log_offsets(rig: Rig) -> dict[str, int]:
    """Where each worker's log ends now: its lines from here are this run's."""
    offsets = {}
    for name in rig.stack.worker_names:
        path = rig.stack.log_path(name)
        offsets[name] = path.stat().st_size if path.exists() else 0
    return offsets


def _route_lines(rig: Rig, offsets: dict[str, int]) -> list[dict[str, Any]]:
    """The JSON lines of the routes' loggers in the workers' logs since `offsets`, by time."""
    entries = []
    for name, offset in offsets.items():
        with rig.stack.log_path(name).open("rb") as log_file:
            log_file.seek(offset)
            for raw in log_file:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue  # not a line of the JSON formatter (a traceback's, a library's)
                if isinstance(entry, dict) and entry.get("logger") in ROUTE_LOGGERS:
                    entries.append(entry)
    return sorted(entries, key=lambda entry: str(entry.get("ts")))


def _since(entry: dict[str, Any], instant: float) -> float:
    return datetime.fromisoformat(str(entry["ts"])).timestamp() - instant


async def _received_at(gateway: SimulatorControl, ids: list[int]) -> dict[int, int]:
    """Requests the gateway received for each of these ids."""
    found: dict[int, int] = {}
    for start in range(0, len(ids), LOOKUPS):
        chunk = ids[start : start + LOOKUPS]
        counts = await asyncio.gather(*(gateway.received(msg_id) for msg_id in chunk))
        found.update(zip(chunk, counts, strict=True))
    return found


async def _switch(gateway: SimulatorControl, **changes: Any) -> tuple[float, float]:
    """(when the PATCH went, its round trip in ms)."""
    sent = time.time()
    await gateway.configure(**changes)
    return sent, round((time.time() - sent) * 1000, 1)


async def run_failover(rig: Rig, settings: FailoverSettings) -> FailoverFigures:
    routes = failover_routes(rig)
    env = routes_env(routes) | {"LOG_JSON": "true", "LOG_LEVEL": "INFO"}
    if settings.mode == "hang":
        env["SEND_TIMEOUT_SECONDS"] = str(HANG_SEND_TIMEOUT_S)
    await prepare(
        rig,
        clients=settings.clients,
        zones=[data.DEFAULT_ZONE],
        latency_ms=0,
        workers=settings.workers,
        service_env=env,
    )
    await prepare_gateways(rig, routes, latency_ms=settings.latency_ms)
    first, second = (rig.simulator.gateway(gateway_of(spec)) for spec in routes)
    offsets = _log_offsets(rig)

    now = datetime.now(UTC)
    body = dispatch_body(start_at=now, end_at=now + timedelta(hours=3), shape=None)
    log.info(
        "failover (%s): %d clients at %g ms, gateway a down for %g s a quarter in",
        settings.mode,
        settings.clients,
        settings.latency_ms,
        settings.outage_s,
    )
    started = time.monotonic()
    dispatch_id = int((await create_dispatch(rig, body))["id"])
    quarter = settings.clients // 4
    while (down_after := (await first.figures()).accepted) < quarter:
        if time.monotonic() - started > settings.timeout_s:
            raise TimeoutError(f"gateway a accepted {down_after} of {quarter} in time")
        await asyncio.sleep(POLL_SECONDS)
    outage: dict[str, Any] = {"outage": True, "outage_mode": settings.mode}
    if settings.mode == "hang":
        outage["hang_seconds"] = HANG_SECONDS
    down_at, down_ms = await _switch(first, **outage)
    log.info("gateway a down (%s) after %d accepted", settings.mode, down_after)
    await asyncio.sleep(settings.outage_s)
    up_at, up_ms = await _switch(first, outage=False, outage_mode="503")
    log.info("gateway a back")
    completed = await await_completed(rig, dispatch_id, timeout_s=settings.timeout_s)
    elapsed = time.monotonic() - started
    if not completed:
        log.warning("failover dispatch %d not completed after %.0f s", dispatch_id, elapsed)

    accepted = {"a": await first.accepted(), "b": await second.accepted()}
    ids = {name: {a.msg_id for a in found} for name, found in accepted.items()}
    messages = await rig.db.fetch(
        "SELECT id, route, status, attempts, last_error FROM message WHERE dispatch_id = $1",
        dispatch_id,
    )
    at_a = await _received_at(first, sorted(ids["b"]))
    sent_on = Counter(str(m["route"]) for m in messages if m["status"] == "sent")
    retried = [m for m in messages if m["attempts"] > 1]
    pinned = {int(m["id"]) for m in retried if m["route"] == "a"}
    gateways = []
    for name, control in (("a", first), ("b", second)):
        stats = await control.stats()
        gateways.append(
            GatewayFigures(
                gateway=name,
                received=int(stats["received"]),
                accepted=int(stats["accepted"]),
                unique_accepted=int(stats["unique_accepted"]),
                duplicates=int(stats["duplicates"]),
                by_status=dict(stats["by_status"]),
                accepted_during_outage=sum(1 for a in accepted[name] if down_at <= a.at < up_at),
                sent=sent_on.get(name, 0),
            )
        )
    lines = _route_lines(rig, offsets)
    opened = next((_since(e, down_at) for e in lines if "opened" in str(e.get("message"))), None)
    story = [e for e in lines if _tells(e)]
    figures = FailoverFigures(
        mode=settings.mode,
        clients=settings.clients,
        latency_ms=settings.latency_ms,
        outage_s=settings.outage_s,
        send_timeout_s=HANG_SEND_TIMEOUT_S if settings.mode == "hang" else None,
        hang_seconds=HANG_SECONDS if settings.mode == "hang" else None,
        dispatch_id=dispatch_id,
        down_after_accepted=down_after,
        completed=completed,
        elapsed_s=round(elapsed, 2),
        statuses=await data.status_counts(rig.db, dispatch_id),
        to_second_route_s=_rounded(_first_after(accepted["b"], down_at)),
        back_to_first_route_s=_rounded(_first_after(accepted["a"], up_at)),
        switch_round_trips_ms=[down_ms, up_ms],
        gateways=gateways,
        at_both=len(ids["a"] & ids["b"]),
        recorded_elsewhere=sum(
            1
            for m in messages
            if m["status"] == "sent" and int(m["id"]) not in ids.get(str(m["route"]), set())
        ),
        retried=len(retried),
        retried_by_route=dict(Counter(str(m["route"]) for m in retried)),
        pinned_at_b=len(pinned & ids["b"]),
        pinned_done_s=_rounded(
            max((a.at - up_at for a in accepted["a"] if a.msg_id in pinned), default=None)
        ),
        last_accepted_s=_rounded(
            max((a.at - up_at for a in accepted["a"] + accepted["b"]), default=None)
        ),
        received_at_a_accepted_at_b=sum(1 for count in at_a.values() if count),
        retried_elsewhere=[
            {
                "id": int(m["id"]),
                "route": m["route"],
                "attempts": int(m["attempts"]),
                "requests_at_a": at_a.get(int(m["id"]), 0),
                "last_error": m["last_error"],
            }
            for m in retried
            if m["route"] != "a"
        ][:RETRIED_SAMPLE],
        failovers_logged=sum(1 for e in lines if FAILOVER_LINE in str(e.get("message"))),
        circuit_opened_s=_rounded(opened),
        gaps=_gaps(accepted["a"] + accepted["b"], down_at),
        circuit_log=[
            f"{_since(e, down_at):+.2f} s {e.get('level')} {e.get('message')}"
            for e in story[:MAX_LOG_LINES]
        ],
    )
    if not completed:
        # Left running, it would send into the next scenario's figures.
        await delete_dispatch(rig, dispatch_id)
    return figures


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def failover_lines(figures: FailoverFigures) -> list[str]:
    f = figures
    how = (
        "503 (certainly not taken)"
        if f.mode == "503"
        else f"hang {f.hang_seconds:g} s > SEND_TIMEOUT_SECONDS {f.send_timeout_s:g} s"
    )
    lines = [
        f"Failover ({f.mode}): {f.clients} clients at {f.latency_ms:g} ms, routes a (priority 1)"
        f" and b (2) serving everyone; gateway a down ({how}) for {f.outage_s:g} s after "
        f"{f.down_after_accepted} accepted (#{f.dispatch_id})",
        f"  {'completed' if f.completed else 'TIMEOUT'} in {f.elapsed_s} s; statuses "
        f"{_statuses(f.statuses)}",
        f"  outage -> first send accepted at b: {_seconds(f.to_second_route_s)} (b's "
        f"{f.latency_ms:g} ms included); circuit a opened after "
        f"{_seconds(f.circuit_opened_s)}; end of outage -> first send at a again: "
        f"{_seconds(f.back_to_first_route_s)}",
        "  pauses of more than "
        f"{GAP_SECONDS:g} s with no send accepted anywhere (from the switch down): "
        + (", ".join(f"{at:+.2f} s for {length:.2f} s" for at, length in f.gaps) or "none"),
    ]
    for g in f.gateways:
        lines.append(
            f"  gateway {g.gateway}: {g.accepted} accepted ({g.unique_accepted} unique, "
            f"{g.duplicates} duplicates), {g.received} received, answers {g.by_status}, "
            f"{g.accepted_during_outage} accepted during the outage; {g.sent} messages sent "
            f"on route {g.gateway}"
        )
    lines += [
        f"  ids at both gateways: {f.at_both}; sent messages not at their route's gateway: "
        f"{f.recorded_elsewhere}; messages retried (more than one attempt): {f.retried} "
        f"{f.retried_by_route or ''}, of those pinned to a accepted at b: {f.pinned_at_b}; "
        f"failovers logged (a -> b within one attempt): {f.failovers_logged}; accepted at b "
        f"after a request to a: {f.received_at_a_accepted_at_b}",
    ]
    if f.pinned_done_s is not None:
        lines.append(
            f"  end of outage -> last send of a message retried on a: "
            f"{_seconds(f.pinned_done_s)}; -> the dispatch's last send: "
            f"{_seconds(f.last_accepted_s)}"
        )
    lines += [f"  retried, not on a: {m}" for m in f.retried_elsewhere]
    if f.circuit_log:
        lines.append("  circuit, from the switch down:")
        lines += [f"    {line}" for line in f.circuit_log]
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())) or "-"
