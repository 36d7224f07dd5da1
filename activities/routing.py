"""Which gateway a message goes through: the first healthy route, by priority, that may serve
its client; the next one when that route certainly did not take it; never two routes for one
message that a gateway may have.

A `Ticket` is taken when the rules say "send now": the first route whose circuit admits a
request, with its token of that route's cap (the wait for it is paced in the caller, as the one
global cap was). `Router.send` then posts through it; an answer that shows the route did not
take the message (refused, 5xx, 429) moves it to the next route that may serve the client, with
that route's token. A timeout, or a connection lost once the request was written, keeps it on
its route: the row records the route, and every retry goes there with the same id.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from activities.circuits import Admission, Circuits
from activities.clock import activity_now
from activities.ratelimit import SendRateLimiter
from activities.remote import RemoteClient, RemoteError
from core import metrics
from core.db import SessionFactory
from core.logging import ids
from core.models import OPEN_MESSAGE_STATUSES
from core.routes import CircuitState, RateUnit, Route
from core.rules import Action, Decision
from core.segments import measure
from core.settings import Settings

log = logging.getLogger(__name__)

NO_ROUTE_SERVES = "no route serves this number"
NO_HEALTHY_ROUTE = "no healthy route: every route that may serve this number is down"
# The least a message pinned to a route that is down waits before its next try.
PINNED_RETRY_MIN_SECONDS = 0.5


@dataclass
class Gateway:
    """One route at run time: its definition, client, cap and concurrency in this process."""

    route: Route
    remote: RemoteClient
    limiter: SendRateLimiter
    slots: asyncio.Semaphore | None = None

    @property
    def name(self) -> str:
        return self.route.name


@dataclass
class Ticket:
    """A message judged to go now: the routes it may take, the one admitted with its token."""

    segments: int
    # The routes it may take, in order; one, when a gateway may already have it.
    candidates: list[Gateway]
    pinned: bool = False
    # The route admitted (and its cap's token taken), None when every candidate is down.
    gateway: Gateway | None = None
    admission: Admission | None = None
    # Whether taking the token waited (the rules are asked again, as time passed).
    waited: bool = False
    # Candidates after the admitted one, for a failover.
    rest: list[Gateway] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """What one send of a message came to."""

    segments: int
    # The route that has the message or may have it; None when none took it.
    route: str | None = None
    error: RemoteError | None = None
    # When the request (the last one, after a failover) went out, and through which route.
    requested_at: datetime | None = None
    via: str | None = None
    # The rules kept the message back after a failover's wait for a cap.
    decision: Decision | None = None
    # A failed send: whether another route that may serve the client is up now (then the
    # failure says nothing of whether the dispatch can send: its breaker does not count it).
    others_up: bool = False


class Router:
    """Every route of this worker process, with their circuits."""

    def __init__(self, gateways: list[Gateway], circuits: Circuits) -> None:
        self.gateways = gateways
        self.by_name = {gateway.name: gateway for gateway in gateways}
        self.circuits = circuits

    @classmethod
    def from_settings(cls, settings: Settings, sessions: SessionFactory) -> Self:
        gateways = []
        for route in settings.routes:
            gateways.append(
                Gateway(
                    route=route,
                    remote=RemoteClient(
                        base_url=route.url,
                        token=route.token,
                        timeout_seconds=settings.send_timeout_seconds,
                        max_connections=route.concurrency or settings.send_concurrency,
                        name=route.name,
                    ),
                    limiter=SendRateLimiter(
                        sessions=sessions,
                        rate_per_second=route.rate_per_second,
                        # The one cap of before routes keeps its row, so that a rolling
                        # upgrade shares it with workers of the previous version.
                        name="send" if route.name == "default" else f"route:{route.name}",
                        ceiling=route.rate_unit == RateUnit.SEGMENTS,
                    ),
                    slots=None
                    if route.concurrency is None
                    else asyncio.Semaphore(route.concurrency),
                )
            )
        circuits = Circuits(
            sessions=sessions,
            names=[gateway.name for gateway in gateways],
            failures_to_open=settings.route_failures_to_open,
            probe_initial_seconds=settings.route_probe_initial_seconds,
            probe_max_seconds=settings.route_probe_max_seconds,
            probe_lease_seconds=settings.send_timeout_seconds + 1.0,
        )
        return cls(gateways, circuits)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for gateway in self.gateways:
            await gateway.remote.aclose()

    def candidates(self, row: Any) -> tuple[list[Gateway], bool]:
        """The routes the message may take, and whether it is pinned to one (a gateway may
        already have it)."""
        if row.route is not None and row.status in OPEN_MESSAGE_STATUSES:
            pinned = self.by_name.get(row.route)
            if pinned is not None:
                return [pinned], True
            log.warning(
                "its route %s is no longer configured: it may go through another",
                row.route,
                extra=ids(message_id=row.id, dispatch_id=row.dispatch_id, client_id=row.client_id),
            )
        serving = [g for g in self.gateways if g.route.serves(row.phone, row.operator_code)]
        return serving, False

    async def ticket(self, row: Any) -> Ticket:
        """The route the message goes through now, its cap's token taken (waits for it)."""
        candidates, pinned = self.candidates(row)
        ticket = Ticket(segments=measure(row.text).segments, candidates=candidates, pinned=pinned)
        await self._admit(ticket, candidates)
        return ticket

    async def _admit(self, ticket: Ticket, candidates: list[Gateway]) -> None:
        ticket.waited = False
        for index, gateway in enumerate(candidates):
            last = index == len(candidates) - 1
            admission = await self.circuits.admit(gateway.name, last=last)
            if admission is None:
                continue
            ticket.gateway, ticket.admission = gateway, admission
            ticket.rest = candidates[index + 1 :]
            if gateway.limiter.rate is not None:
                await gateway.limiter.acquire(gateway.route.units(ticket.segments))
                ticket.waited = True
            return
        ticket.gateway, ticket.admission, ticket.rest = None, None, []

    async def release(self, ticket: Ticket) -> None:
        """The ticket goes unused (the rules kept the message back after the wait)."""
        if ticket.gateway is not None and ticket.admission == Admission.PROBE:
            await self.circuits.release(ticket.gateway.name)

    async def send(
        self, row: Any, ticket: Ticket, judge_again: Callable[[], Awaitable[Decision]]
    ) -> Attempt:
        """Posts the message through its ticket's route, and on through the next routes while
        each certainly did not take it. `judge_again` asks the rules after a wait for a cap."""
        log_ids = ids(message_id=row.id, dispatch_id=row.dispatch_id, client_id=row.client_id)
        if not ticket.candidates:
            return Attempt(
                ticket.segments,
                error=RemoteError(NO_ROUTE_SERVES, kind="no_route", permanent=True),
            )
        last: RemoteError | None = None
        requested_at, via = None, None
        while ticket.gateway is not None:
            gateway, admission = ticket.gateway, ticket.admission
            assert admission is not None
            requested_at, via = activity_now(), gateway.name
            try:
                error = await self._post(gateway, row)
            except BaseException:
                # Cancelled or broken mid-probe: the claim lapses on its own; this process's
                # requests stop waiting for its answer.
                self.circuits.abandon(gateway.name)
                raise
            if error is None or not error.shows_down:
                # The gateway answered: it is up, whatever it said of the message.
                await self.circuits.answered(gateway.name, admission)
            else:
                await self.circuits.down(gateway.name, admission, str(error), error.retry_after)
            if error is None:
                metrics.SEGMENTS_SENT.labels(gateway.name).inc(ticket.segments)
                return Attempt(ticket.segments, gateway.name, None, requested_at, gateway.name)
            if error.maybe_taken or ticket.pinned or not error.shows_down:
                # It stays with this route: the gateway may have it (or refused it for good,
                # which the message's record names); our credentials refused pin nothing.
                keeps = error.maybe_taken or ticket.pinned or error.permanent
                route = gateway.name if keeps else None
                others_up = self._others_up(row, gateway.name)
                return Attempt(
                    ticket.segments, route, error, requested_at, gateway.name, others_up=others_up
                )
            last = error
            await self._admit(ticket, ticket.rest)
            if ticket.gateway is not None:
                metrics.ROUTE_FAILOVERS.labels(gateway.name).inc()
                log.info(
                    "route %s did not take it (%s): on to route %s",
                    gateway.name,
                    error,
                    ticket.gateway.name,
                    extra=log_ids,
                )
            if ticket.waited:
                decision = await judge_again()
                if decision.action != Action.SEND:
                    await self.release(ticket)
                    return Attempt(ticket.segments, decision=decision)
        if last is None:
            down = "; ".join(self.circuits.why_down(g.name) for g in ticket.candidates)
            # A message its route may have waits for that route's probe, no longer (its
            # delivery's backoff alone could keep it for minutes after the route is back).
            wait = self.circuits.probe_in(ticket.candidates[0].name) if ticket.pinned else None
            last = RemoteError(
                f"{NO_HEALTHY_ROUTE} ({down})",
                kind="no_route",
                retry_after=None if wait is None else max(PINNED_RETRY_MIN_SECONDS, wait),
            )
        others_up = self._others_up(row, via)
        return Attempt(ticket.segments, None, last, requested_at, via, others_up=others_up)

    def _others_up(self, row: Any, failed: str | None) -> bool:
        """Whether a route other than `failed` that may serve the client is closed now."""
        return any(
            gateway.name != failed
            and self.circuits.state(gateway.name) == CircuitState.CLOSED
            and gateway.route.serves(row.phone, row.operator_code)
            for gateway in self.gateways
        )

    async def _post(self, gateway: Gateway, row: Any) -> RemoteError | None:
        """One request; the gateway's error, if any. Anything else than its answer (a closed
        client at shutdown, a bug) propagates and fails the attempt."""
        try:
            if gateway.slots is None:
                await gateway.remote.send(message_id=row.id, phone=row.phone, text=row.text)
            else:
                async with gateway.slots:
                    await gateway.remote.send(message_id=row.id, phone=row.phone, text=row.text)
        except RemoteError as error:
            return error
        return None
