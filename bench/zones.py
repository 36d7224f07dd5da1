"""The zone run: clients over Russia's eleven zones and a window that opens in one of them a few
minutes into the run; how late its messages go after the opening, and the zones already open."""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench import data
from bench.figures import Delays, ZoneFigures, ZoneRunFigures
from bench.history import CLIENT_SAMPLE, dispatch_history
from bench.rig import Rig, create_dispatch, delete_dispatch, dispatch_body, prepare

log = logging.getLogger(__name__)

OPENING_LEAD = timedelta(minutes=3)
WINDOW_LENGTH = timedelta(hours=4)
# The other zones open whole hours after the opening one: past end_at, so they never send.
END_AFTER = timedelta(hours=1)
POLL_INTERVAL = 1.0
PROGRESS_EVERY = 10.0


@dataclass(frozen=True)
class ZoneRunSettings:
    clients: int
    latency_ms: float
    shape: str | None
    opening_zone: str
    timeout_s: float


def opening_window(now: datetime, zone: str) -> tuple[datetime, dict[str, str]]:
    """The opening instant (local time in `zone` at now + lead, rounded up to the minute) and a
    window from it, 4 hours long, as local "HH:MM" times.

    Zones are whole hours apart, so this opening happens in this zone alone; zones 1-4 hours
    east of it are already inside the window.
    """
    local = (now + OPENING_LEAD).astimezone(ZoneInfo(zone))
    start = local.replace(second=0, microsecond=0)
    if start < local:
        start += timedelta(minutes=1)
    end = start + WINDOW_LENGTH
    return start.astimezone(UTC), {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def zone_kind(
    zone: str, opens_at: datetime | None, *, start_at: datetime, opening_zone: str
) -> str:
    if opens_at is None:
        return "never"  # the window opens there only after end_at
    if opens_at <= start_at:
        return "immediate"
    return "opening" if zone == opening_zone else "later"


async def run_zones(rig: Rig, settings: ZoneRunSettings) -> ZoneRunFigures:
    await prepare(
        rig, clients=settings.clients, zones=data.RUSSIA_ZONES, latency_ms=settings.latency_ms
    )
    clients_per_zone = await data.client_zones(rig.db)
    now = datetime.now(UTC)
    opening_at, window = opening_window(now, settings.opening_zone)
    body = dispatch_body(start_at=now, end_at=now + END_AFTER, shape=settings.shape, window=window)
    log.info(
        "zone run: %d clients, window %s-%s opens in %s at %s",
        settings.clients,
        window["start"],
        window["end"],
        settings.opening_zone,
        opening_at.isoformat(),
    )
    started = time.monotonic()
    dispatch_id = int((await create_dispatch(rig, body))["id"])
    done = await _await_zone_final(
        rig,
        dispatch_id,
        zone=settings.opening_zone,
        clients=clients_per_zone.get(settings.opening_zone, 0),
        timeout_s=settings.timeout_s,
    )
    elapsed = time.monotonic() - started
    if not done:
        log.warning("zone run: %s not done after %.0f s", settings.opening_zone, elapsed)
    figures = await _figures(
        rig,
        settings,
        dispatch_id,
        clients_per_zone=clients_per_zone,
        window=window,
        opening_at=opening_at,
        done=done,
        elapsed=elapsed,
    )
    # Stops the zones still waiting: nothing of this run may send into what follows.
    figures.deleted = await delete_dispatch(rig, dispatch_id)
    return figures


async def _await_zone_final(
    rig: Rig, dispatch_id: int, *, zone: str, clients: int, timeout_s: float
) -> bool:
    """Until every client of `zone` has a final message (True), or the timeout (False)."""
    deadline = time.monotonic() + timeout_s
    next_progress = time.monotonic() + PROGRESS_EVERY
    while True:
        final = await data.final_in_zone(rig.db, dispatch_id, zone)
        if final >= clients:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if now >= next_progress:
            log.info("zone run: %s has %d of %d messages final", zone, final, clients)
            next_progress = now + PROGRESS_EVERY
        rig.stack.check_alive()
        await asyncio.sleep(POLL_INTERVAL)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


async def _figures(
    rig: Rig,
    settings: ZoneRunSettings,
    dispatch_id: int,
    *,
    clients_per_zone: dict[str, int],
    window: dict[str, str],
    opening_at: datetime,
    done: bool,
    elapsed: float,
) -> ZoneRunFigures:
    dispatch = await data.load_dispatch(rig.db, dispatch_id)
    opens = data.earliest_instants(dispatch, data.RUSSIA_ZONES)
    kinds = {
        zone: zone_kind(zone, at, start_at=dispatch.start_at, opening_zone=settings.opening_zone)
        for zone, at in opens.items()
    }
    if opens[settings.opening_zone] != opening_at:
        log.warning(
            "zone run: %s opens at %s, not at the intended %s",
            settings.opening_zone,
            opens[settings.opening_zone],
            opening_at,
        )
    immediate = [zone for zone, kind in kinds.items() if kind == "immediate"]
    _, per_zone = await data.delays(rig.db, dispatch_id, opens)
    immediate_delays, _ = await data.delays(
        rig.db, dispatch_id, {zone: opens[zone] for zone in immediate}
    )
    _, immediate_rate = await data.sent_rate(rig.db, dispatch, immediate)
    statuses = await data.status_counts_by_zone(rig.db, dispatch_id)
    no_delays = Delays(count=0, p50_s=None, p99_s=None, max_s=None)
    zones = [
        ZoneFigures(
            zone=zone,
            kind=kinds[zone],
            opens_at=_iso(opens[zone]),
            clients=clients_per_zone.get(zone, 0),
            statuses=statuses.get(zone, {}),
            delays=per_zone.get(zone, no_delays),
        )
        for zone in data.RUSSIA_ZONES
    ]
    sample = await data.first_client_ids(rig.db, dispatch_id, CLIENT_SAMPLE)
    return ZoneRunFigures(
        clients=settings.clients,
        latency_ms=settings.latency_ms,
        shape=settings.shape,
        dispatch_id=dispatch_id,
        window=window,
        opening_zone=settings.opening_zone,
        opening_at=opening_at.isoformat(),
        opening_zone_done=done,
        elapsed_s=round(elapsed, 2),
        opening_delays=per_zone.get(settings.opening_zone, no_delays),
        immediate_delays=immediate_delays,
        immediate_messages_per_s=None if immediate_rate is None else round(immediate_rate, 2),
        zones=zones,
        history=await dispatch_history(
            rig.temporal, dispatch_id=dispatch_id, zones=data.RUSSIA_ZONES, client_ids=sample
        ),
        peak_rss_mb=rig.memory.peaks_mb(),
        remote=await rig.simulator.figures(),
        deleted=False,
    )
