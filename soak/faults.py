"""The fault loop: each fault of the schedule at its moment, logged with its time.

Faults run as tasks of their own, so that they overlap as incidents do: a worker killed while
PostgreSQL restarts and the gateway is down. A worker already down when its next fault comes
is left alone (the fault is recorded as skipped). Gateway faults of one kind that overlap keep
the gateway misbehaving until the last of them ends.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.remote import SimulatorControl
from soak.plan import (
    GARBAGE,
    GATEWAY_FAULTS,
    GATEWAY_OUTAGE,
    LATENCY_SPIKE,
    POSTGRES_RESTART,
    TEMPORAL_RESTART,
    THROTTLE,
    WORKER_KILL,
    WORKER_TERM,
    Fault,
    Profile,
)
from soak.stack import SoakStack

log = logging.getLogger(__name__)

GARBAGE_RATE = 0.3
GARBAGE_CODE_RATE = 0.1
THROTTLE_RATE = 0.5
# A worker stopped by SIGTERM has WORKER_SHUTDOWN_SECONDS, and this much more, to exit.
EXIT_MARGIN_S = 15.0


@dataclass
class FaultRecord:
    """What one fault did, in epoch seconds: from the moment it was set off (a kill's signal
    sent, the gateway's switch flipped) to its end (the process started again and listening,
    the gateway healthy again)."""

    index: int
    kind: str
    what: str
    started: float
    ended: float | None = None
    outcome: str = "done"  # done, skipped, or what went wrong
    exit_code: int | None = None  # of a worker stopped by SIGTERM

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "what": self.what,
            "started": _iso(self.started),
            "ended": None if self.ended is None else _iso(self.ended),
            "seconds": None if self.ended is None else round(self.ended - self.started, 1),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class FaultLoop:
    def __init__(
        self,
        *,
        stack: SoakStack,
        gateway: SimulatorControl,
        profile: Profile,
        schedule: list[Fault],
        shutdown_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.gateway = gateway
        self.profile = profile
        self.schedule = schedule
        self.shutdown_seconds = shutdown_seconds
        self.clock = clock
        self.records: list[FaultRecord] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._active: dict[str, int] = {}
        self._busy_workers: set[int] = set()
        self._busy: set[str] = set()

    async def run(self, started_at: float) -> None:
        """Each fault at `started_at` + its offset (epoch seconds), until the schedule ends."""
        for index, fault in enumerate(self.schedule, start=1):
            delay = started_at + fault.at_s - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self._tasks.append(asyncio.create_task(self._guarded(index, fault)))

    async def finish(self) -> list[str]:
        """Waits for the faults under way to end (a process down comes back, the gateway heals),
        then starts whatever is still down; the names of those."""
        if self._tasks:
            await asyncio.gather(*self._tasks)
        return await asyncio.to_thread(self.stack.ensure_running)

    async def _guarded(self, index: int, fault: Fault) -> None:
        record = FaultRecord(index, fault.kind, fault.describe(), started=self.clock())
        self.records.append(record)
        log.warning(
            "fault %d at %s (+%.0f s): %s", index, _iso(record.started), fault.at_s, record.what
        )
        try:
            await self._inject(fault, record)
        except Exception as error:  # a fault that fails is a figure of the run, not its end
            log.exception("fault %d (%s) failed", index, fault.kind)
            record.outcome = f"failed: {error!r}"
        if record.ended is None:
            record.ended = self.clock()
        log.warning(
            "fault %d over after %.1f s: %s", index, record.ended - record.started, record.outcome
        )

    async def _inject(self, fault: Fault, record: FaultRecord) -> None:
        if fault.kind in GATEWAY_FAULTS:
            await self._gateway(fault, record)
        elif fault.kind in (WORKER_KILL, WORKER_TERM):
            await self._worker(fault, record)
        elif fault.kind == TEMPORAL_RESTART:
            await self._restart(
                "temporal", self.stack.kill_temporal, self.stack.start_temporal, fault, record
            )
        elif fault.kind == POSTGRES_RESTART:
            await self._restart(
                "postgres", self.stack.kill_postgres, self.stack.start_postgres, fault, record
            )
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    async def _worker(self, fault: Fault, record: FaultRecord) -> None:
        index = fault.worker
        if index in self._busy_workers or self.stack.worker_pid(index) is None:
            record.outcome = f"skipped: worker-{index} is already down"
            return
        self._busy_workers.add(index)
        try:
            if fault.kind == WORKER_KILL:
                process = await asyncio.to_thread(self.stack.signal_worker, index, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
                await asyncio.sleep(fault.duration_s)
            else:
                process = await asyncio.to_thread(self.stack.signal_worker, index, signal.SIGTERM)
                record.exit_code = await asyncio.to_thread(
                    self.stack.wait_exit, process, self.shutdown_seconds + EXIT_MARGIN_S
                )
                if record.exit_code != 0:
                    record.outcome = f"worker-{index} exited {record.exit_code} after SIGTERM"
            await asyncio.to_thread(self.stack.start_worker, index)
        finally:
            self._busy_workers.discard(index)
        record.ended = self.clock()

    async def _restart(
        self,
        name: str,
        kill: Callable[[], None],
        start: Callable[[], None],
        fault: Fault,
        record: FaultRecord,
    ) -> None:
        if name in self._busy:
            record.outcome = f"skipped: {name} is already restarting"
            return
        self._busy.add(name)
        try:
            await asyncio.to_thread(kill)
            await asyncio.sleep(fault.duration_s)
            await asyncio.to_thread(start)
        finally:
            self._busy.discard(name)
        record.ended = self.clock()

    async def _gateway(self, fault: Fault, record: FaultRecord) -> None:
        on, off = self._switches(fault)
        self._active[fault.kind] = self._active.get(fault.kind, 0) + 1
        await self.gateway.configure(**on)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            self._active[fault.kind] -= 1
            if self._active[fault.kind] == 0:
                await self.gateway.configure(**off)
        record.ended = self.clock()

    def _switches(self, fault: Fault) -> tuple[dict[str, Any], dict[str, Any]]:
        """The gateway's switches during the fault, and after it."""
        if fault.kind == GATEWAY_OUTAGE:
            return {"outage": True}, {"outage": False}
        if fault.kind == LATENCY_SPIKE:
            return {"latency_ms": fault.value}, {"latency_ms": self.profile.latency_ms}
        if fault.kind == GARBAGE:
            rates = {"garbage_rate": GARBAGE_RATE, "garbage_code_rate": GARBAGE_CODE_RATE}
            return rates, {"garbage_rate": 0, "garbage_code_rate": 0}
        if fault.kind == THROTTLE:
            on = {"throttle_rate": THROTTLE_RATE, "retry_after_seconds": int(fault.value)}
            return on, {"throttle_rate": 0}
        raise ValueError(f"not a gateway fault: {fault.kind}")
