"""Prometheus pages the bench reads: each worker's /metrics (its share of a dispatch) and the
Temporal dev server's (its `action` counter, heartbeats among them)."""

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

# core/metrics.py MESSAGES_FINISHED; prometheus_client exposes a counter with `_total`.
MESSAGES_FINISHED = "mailing_messages_finished_total"
# The OSS server's count of what Temporal Cloud would bill, by action_type (1.22.3 and later
# close to Cloud's pricing); the frontend's is the one to sum.
SERVER_ACTION = "action"
SERVER_REQUESTS = "service_requests"
HEARTBEAT_ACTIONS = ("grpc_RecordActivityTaskHeartbeat", "grpc_RecordActivityTaskHeartbeatById")
HEARTBEAT_OPERATIONS = ("RecordActivityTaskHeartbeat", "RecordActivityTaskHeartbeatById")
# The server's counters reach its /metrics page a moment after the fact: a page is read again
# until two readings this far apart agree (or for at most SETTLE_MAX_S).
SETTLE_INTERVAL_S = 1.5
SETTLE_MAX_S = 15.0


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


async def scrape(http: httpx.AsyncClient, url: str) -> list[Sample]:
    """Every sample of a Prometheus text page."""
    response = await http.get(url, timeout=10)
    response.raise_for_status()
    return [
        Sample(name=sample.name, labels=dict(sample.labels), value=float(sample.value))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


async def messages_sent(http: httpx.AsyncClient, url: str) -> int | None:
    """`mailing_messages_finished_total{status="sent"}` of one worker; None if unreadable."""
    try:
        samples = await scrape(http, url)
    except (httpx.HTTPError, ValueError) as error:
        log.warning("worker metrics at %s not read: %s", url, error)
        return None
    return int(
        sum(
            s.value
            for s in samples
            if s.name == MESSAGES_FINISHED and s.labels.get("status") == "sent"
        )
    )


@dataclass(frozen=True)
class ServerCounters:
    """The dev server's counters of one namespace at one instant."""

    actions: dict[str, float]  # `action` by action_type, frontend only
    heartbeat_requests: float  # RecordActivityTaskHeartbeat(ById) requests at the frontend

    def minus(self, before: "ServerCounters") -> "ServerCounters":
        return ServerCounters(
            actions={
                kind: value - before.actions.get(kind, 0.0)
                for kind, value in self.actions.items()
                if value - before.actions.get(kind, 0.0) > 0
            },
            heartbeat_requests=self.heartbeat_requests - before.heartbeat_requests,
        )

    @property
    def heartbeat_actions(self) -> float:
        """Heartbeats that reached the server, by its action counter."""
        return sum(self.actions.get(kind, 0.0) for kind in HEARTBEAT_ACTIONS)


async def server_counters(
    http: httpx.AsyncClient, url: str, namespace: str
) -> ServerCounters | None:
    """None when the server serves no metrics there (an older CLI, another server)."""
    try:
        samples = await scrape(http, url)
    except (httpx.HTTPError, ValueError) as error:
        log.warning("Temporal server metrics at %s not read: %s", url, error)
        return None
    actions: dict[str, float] = {}
    heartbeats = 0.0
    for s in samples:
        if s.labels.get("namespace") != namespace or s.labels.get("service_name") != "frontend":
            continue
        if s.name in (SERVER_ACTION, f"{SERVER_ACTION}_total"):
            kind = s.labels.get("action_type", "?")
            actions[kind] = actions.get(kind, 0.0) + s.value
        elif s.name in (SERVER_REQUESTS, f"{SERVER_REQUESTS}_total") and (
            s.labels.get("operation") in HEARTBEAT_OPERATIONS
        ):
            heartbeats += s.value
    return ServerCounters(actions=actions, heartbeat_requests=heartbeats)


async def settled_server_counters(
    http: httpx.AsyncClient, url: str, namespace: str
) -> ServerCounters | None:
    """`server_counters` once two readings SETTLE_INTERVAL_S apart agree: what was just done
    is in it, and the reading does not move under the next scenario."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last = await server_counters(http, url, namespace)
    while last is not None:
        await asyncio.sleep(SETTLE_INTERVAL_S)
        reading = await server_counters(http, url, namespace)
        if reading is None or reading == last or time.monotonic() >= deadline:
            return reading
        last = reading
    return None
