"""Each send route's circuit, shared by every worker process through the `send_route` table.

Closed, a route takes traffic. After ROUTE_FAILURES_TO_OPEN failures in a row that show its
gateway down (as one process counts them), the process opens it: every process reads the
table at most REFRESH_SECONDS later and sends the route's traffic to the next route that may
serve each client. From `probe_at` one request (the first process to claim it) goes through
the open route as its probe: answered, the route closes; down again, it opens for twice as
long, up to ROUTE_PROBE_MAX_SECONDS. A process that claimed a probe and died leaves a claim
that lapses after `probe_lease`, and the next process probes.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from core import metrics
from core.db import SessionFactory
from core.models import send_route_t
from core.routes import CircuitState

log = logging.getLogger(__name__)

# A process reads every route's state at most this long after another process changed it.
REFRESH_SECONDS = 0.5


class Admission(StrEnum):
    """How a request may use a route now."""

    NORMAL = "normal"  # closed: in use
    PROBE = "probe"  # open, and this request is its probe


@dataclass
class _Health:
    state: CircuitState = CircuitState.CLOSED
    probe_at: datetime | None = None
    last_error: str | None = None


_CLAIM_PROBE = sa.text(
    """
    UPDATE send_route SET state = 'probing', since = now(),
        probe_at = now() + make_interval(secs => :lease)
    WHERE name = :name AND state IN ('open', 'probing') AND probe_at <= now()
    RETURNING probe_at
    """
)

_OPEN = sa.text(
    """
    INSERT INTO send_route AS r
        (name, state, since, down_since, probe_at, failed_probes, last_error, last_error_at)
    VALUES (:name, 'open', now(), now(), now() + make_interval(secs => :wait), 0, :error, now())
    ON CONFLICT (name) DO UPDATE SET
        state = 'open', since = now(), down_since = now(),
        probe_at = now() + make_interval(secs => :wait), failed_probes = 0,
        last_error = :error, last_error_at = now()
    WHERE r.state = 'closed'
    RETURNING probe_at
    """
)

_REOPEN = sa.text(
    """
    UPDATE send_route SET state = 'open', since = now(),
        probe_at = now() + make_interval(
            secs => greatest(least(:initial * 2 ^ (failed_probes + 1), :max), :asked)),
        failed_probes = failed_probes + 1, last_error = :error, last_error_at = now()
    WHERE name = :name AND state = 'probing'
    RETURNING failed_probes, probe_at, extract(epoch FROM probe_at - now())
    """
)

_CLOSE = sa.text(
    """
    UPDATE send_route SET state = 'closed', since = now(), probe_at = NULL, failed_probes = 0
    WHERE name = :name AND state <> 'closed'
    RETURNING down_since
    """
)

# A probe given up before its request (the rules kept the message back): another may go now.
_RELEASE = sa.text(
    "UPDATE send_route SET state = 'open', probe_at = now() "
    "WHERE name = :name AND state = 'probing' RETURNING probe_at"
)


class Circuits:
    """The circuits of every route as this worker process sees them, and the moves it makes."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        names: list[str],
        failures_to_open: int,
        probe_initial_seconds: float,
        probe_max_seconds: float,
        probe_lease_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.names = names
        self.failures_to_open = failures_to_open
        self.probe_initial = probe_initial_seconds
        self.probe_max = probe_max_seconds
        self.probe_lease = probe_lease_seconds
        self._health = {name: _Health() for name in names}
        self._failures = dict.fromkeys(names, 0)
        # The probes this process has in flight: set when each one's answer is known.
        self._probes: dict[str, asyncio.Event] = {}
        self._read_at = -REFRESH_SECONDS

    def state(self, name: str) -> CircuitState:
        return self._health[name].state

    def probe_in(self, name: str) -> float | None:
        """Seconds until the route may be probed (None: it is closed)."""
        health = self._health[name]
        if health.state == CircuitState.CLOSED or health.probe_at is None:
            return None
        return max(0.0, (health.probe_at - datetime.now(UTC)).total_seconds())

    def why_down(self, name: str) -> str:
        """What the route last failed with, for the record of a message it could not take."""
        return f"route {name} is {self._health[name].state}: {self._health[name].last_error}"

    async def refresh(self) -> None:
        """Reads every route's state again when the last read is older than REFRESH_SECONDS."""
        now = time.monotonic()
        if now - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = now
        async with self.sessions() as session:
            rows = (
                await session.execute(
                    sa.select(
                        send_route_t.c.name,
                        send_route_t.c.state,
                        send_route_t.c.probe_at,
                        send_route_t.c.last_error,
                    )
                )
            ).all()
        known = {row.name: row for row in rows}
        for name, health in self._health.items():
            row = known.get(name)
            health.state = CircuitState(row.state) if row else CircuitState.CLOSED
            health.probe_at = row.probe_at if row else None
            health.last_error = row.last_error if row else None
            for state in CircuitState:
                metrics.ROUTE_STATE.labels(name, state).set(int(state == health.state))

    async def admit(self, name: str, *, last: bool = True) -> Admission | None:
        """Whether a request may go through the route now, and as what (None: it may not).
        `last`: the request has no other route to go to."""
        await self.refresh()
        health = self._health[name]
        probe = self._probes.get(name)
        if probe is not None:
            if not last:
                # Another route may take it now: no waiting on a gateway that may hang.
                return None
            # This process is probing the route, the request's only one: it waits for the
            # answer rather than give up on a gateway that may well be back.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.probe_lease):
                    await probe.wait()
            return Admission.NORMAL if health.state == CircuitState.CLOSED else None
        if health.state == CircuitState.CLOSED:
            return Admission.NORMAL
        if health.probe_at is None or health.probe_at > datetime.now(UTC):
            return None
        async with self.sessions() as session:
            won = await session.execute(_CLAIM_PROBE, {"name": name, "lease": self.probe_lease})
            lease = won.scalar_one_or_none()
            await session.commit()
        # Claimed or not, no other request of this process probes before the next read.
        health.state = CircuitState.PROBING
        health.probe_at = lease or datetime.now(UTC) + timedelta(seconds=self.probe_lease)
        if lease is not None:
            log.info("route %s: probing whether its gateway is back", name)
            self._probes[name] = asyncio.Event()
            return Admission.PROBE
        return None

    def abandon(self, name: str) -> None:
        """A request of this process that went away without an answer (cancelled, broken):
        if it was a probe, the other requests stop waiting for it (its claim lapses)."""
        if name in self._probes:
            self._health[name].state = CircuitState.OPEN
            self._probed(name)

    def _probed(self, name: str) -> None:
        probe = self._probes.pop(name, None)
        if probe is not None:
            probe.set()

    async def answered(self, name: str, admission: Admission) -> None:
        """The gateway answered (whatever it said). A probe's answer closes the circuit; the
        answer of a request sent before it opened says nothing of the gateway now."""
        self._failures[name] = 0
        if admission != Admission.PROBE:
            return
        async with self.sessions() as session:
            down_since = (await session.execute(_CLOSE, {"name": name})).scalar_one_or_none()
            await session.commit()
        self._health[name].state = CircuitState.CLOSED
        self._probed(name)
        if down_since is not None:
            metrics.ROUTE_TRANSITIONS.labels(name, CircuitState.CLOSED).inc()
            log.warning(
                "route %s closed: its gateway answers again (down since %s)", name, down_since
            )

    async def down(
        self, name: str, admission: Admission, error: str, retry_after: float | None = None
    ) -> None:
        """A failure that shows the gateway down (refused, reset, 5xx, 429, timeout); a 429's
        Retry-After puts the next probe no sooner."""
        asked = retry_after or 0.0
        self._failures[name] += 1
        self._health[name].last_error = error
        if admission == Admission.PROBE:
            async with self.sessions() as session:
                row = (
                    await session.execute(
                        _REOPEN,
                        {
                            "name": name,
                            "initial": self.probe_initial,
                            "asked": asked,
                            "max": self.probe_max,
                            "error": error,
                        },
                    )
                ).one_or_none()
                await session.commit()
            self._health[name].state = CircuitState.OPEN
            if row is not None:
                self._health[name].probe_at = row.probe_at
                log.warning(
                    "route %s: probe %d failed (%s), next probe in %.1f s",
                    name,
                    row.failed_probes,
                    error,
                    row[2],
                )
            self._probed(name)
            return
        failures = self._failures[name]
        if failures < self.failures_to_open:
            return
        if self._health[name].state != CircuitState.CLOSED:
            return
        async with self.sessions() as session:
            opened = (
                await session.execute(
                    _OPEN,
                    {"name": name, "wait": max(self.probe_initial, asked), "error": error},
                )
            ).scalar_one_or_none()
            await session.commit()
        self._health[name].state = CircuitState.OPEN
        if opened is None:
            # Opened by another request or process since the last read: the next admission
            # reads when its probe is due.
            self._read_at = -REFRESH_SECONDS
        else:
            self._health[name].probe_at = opened
        if opened is not None:
            metrics.ROUTE_TRANSITIONS.labels(name, CircuitState.OPEN).inc()
            log.warning(
                "route %s opened after %d failures in a row (%s): its traffic goes to the "
                "next route",
                name,
                failures,
                error,
            )

    async def release(self, name: str) -> None:
        """A claimed probe that sent nothing: the next request may probe."""
        async with self.sessions() as session:
            released = (await session.execute(_RELEASE, {"name": name})).scalar_one_or_none()
            await session.commit()
        self._health[name].state = CircuitState.OPEN
        self._health[name].probe_at = released or datetime.now(UTC)
        self._probed(name)
