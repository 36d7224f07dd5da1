"""What every scenario works with, and the steps they share: fresh tables and clients, fresh
worker and API processes, the simulator at a latency, dispatches through the API."""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from temporalio.client import Client

from bench import data
from bench.memory import PeakRss
from bench.remote import SimulatorControl
from bench.stack import BenchStack, wait_until_ready

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
PROGRESS_EVERY = 10.0


@dataclass
class Rig:
    stack: BenchStack
    temporal: Client
    http: httpx.AsyncClient
    simulator: SimulatorControl
    memory: PeakRss
    db: data.Connection

    @property
    def dispatches_url(self) -> str:
        return f"{self.stack.api_url}/api/v1/dispatches"


async def prepare(
    rig: Rig,
    *,
    clients: int,
    zones: Sequence[str],
    latency_ms: float,
    workers: int | None = None,
    service_env: dict[str, str] | None = None,
) -> float:
    """Fresh tables with `clients` clients, fresh workers and API, zeroed peaks and counters.
    `workers`: how many worker processes from now on (None: as many as before); `service_env`:
    settings of the workers and the API for this scenario only (e.g. SEND_ROUTES). Returns the
    seconds the bulk insert took.

    The worker and the API are restarted so that each scenario's peak memory is its own:
    Python seldom hands memory back, so a second scenario in the same process would start
    from the first one's peak.
    """
    await data.reset_tables(rig.db)
    started = time.monotonic()
    await data.insert_clients(rig.db, count=clients, zones=zones)
    insert_s = time.monotonic() - started
    log.info("%d clients inserted in %.1f s", clients, insert_s)
    if workers is not None:
        rig.stack.workers = workers
    rig.stack.scenario_env = dict(service_env or {})
    await asyncio.to_thread(rig.stack.restart_services)
    await wait_until_ready(rig.stack, rig.temporal)
    await rig.simulator.prepare(latency_ms=latency_ms)
    rig.memory.reset()
    return insert_s


# The text of every dispatch of the bench but the personal text's.
PLAIN_TEXT = "Bench message"


def dispatch_body(
    *,
    start_at: datetime,
    end_at: datetime,
    shape: str | None,
    window: dict[str, str] | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "start_at": start_at.isoformat(),
        "end_at": end_at.isoformat(),
        "text": text or PLAIN_TEXT,
        "filter": {"all": True},
    }
    # Sent only when asked for: a server without the field ignores it, and without it the
    # server's own default shape is what gets measured.
    if shape is not None:
        body["delivery"] = shape
    if window is not None:
        body["window"] = window
    return body


async def create_dispatch(rig: Rig, body: dict[str, Any]) -> dict[str, Any]:
    response = await rig.http.post(rig.dispatches_url, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST dispatch answered {response.status_code}: {response.text}")
    created: dict[str, Any] = response.json()
    return created


async def get_dispatch(rig: Rig, dispatch_id: int) -> dict[str, Any]:
    response = await rig.http.get(f"{rig.dispatches_url}/{dispatch_id}")
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


async def delete_dispatch(rig: Rig, dispatch_id: int) -> bool:
    response = await rig.http.delete(f"{rig.dispatches_url}/{dispatch_id}")
    if response.status_code != 204:
        log.warning(
            "DELETE dispatch %d answered %d: %s", dispatch_id, response.status_code, response.text
        )
    return response.status_code == 204


async def await_completed(rig: Rig, dispatch_id: int, *, timeout_s: float) -> bool:
    """Polls the dispatch until its status is completed (True) or the timeout (False)."""
    deadline = time.monotonic() + timeout_s
    next_progress = time.monotonic() + PROGRESS_EVERY
    while True:
        dispatch = await get_dispatch(rig, dispatch_id)
        if dispatch["status"] == "completed":
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if now >= next_progress:
            log.info("dispatch %d %s: %s", dispatch_id, dispatch["status"], dispatch["messages"])
            next_progress = now + PROGRESS_EVERY
        rig.stack.check_alive()
        await asyncio.sleep(POLL_INTERVAL)
