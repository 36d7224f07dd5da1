"""What a soak run does and when, drawn up front from its profile, its seed and its start.

Pure: the same profile, seed and start give the same dispatches and the same fault schedule,
so that a failing run can be repeated (`--seed`). The windows are minute-precise "HH:MM" local
times; Russia's zones are whole hours apart, so one window opens in one zone at a time.
"""

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.windows import RUSSIA_ZONES

# Every fault the loop picks from. The first four are the stack's processes, the rest the
# gateway's behaviour.
WORKER_KILL = "worker_kill"  # kill -9 of one worker process, started again after a while
WORKER_TERM = "worker_term"  # SIGTERM of one worker process (its grace), started again
TEMPORAL_RESTART = "temporal_restart"  # kill -9 of the Temporal dev server, started again
POSTGRES_RESTART = "postgres_restart"  # kill -9 of PostgreSQL's postmaster, started again
GATEWAY_OUTAGE = "gateway_outage"  # every send answered 503
LATENCY_SPIKE = "latency_spike"  # every answer seconds late (below the send timeout)
GARBAGE = "garbage"  # some answers 200 with a body that is not the contract's
THROTTLE = "throttle"  # some answers 429 with Retry-After
FAULT_KINDS = (
    WORKER_KILL,
    WORKER_TERM,
    TEMPORAL_RESTART,
    POSTGRES_RESTART,
    GATEWAY_OUTAGE,
    LATENCY_SPIKE,
    GARBAGE,
    THROTTLE,
)
# Restarts of what the API depends on: 503s while they last are expected answers.
API_RESTARTS = frozenset({TEMPORAL_RESTART, POSTGRES_RESTART})
GATEWAY_FAULTS = frozenset({GATEWAY_OUTAGE, LATENCY_SPIKE, GARBAGE, THROTTLE})

# The zone dispatch's window is this many hours long plus the minutes between its opening in
# one zone and its closing in the zone this many hours east: the zones between are open all run.
ZONE_SPAN_HOURS = 3
PER_CLIENT_SPAN_HOURS = 2
# The third dispatch is paused this long after its start.
PAUSE_AFTER = timedelta(seconds=3)


@dataclass(frozen=True)
class Profile:
    """The size and pace of a run."""

    minutes: float  # how long the faults and the API load go on
    clients: int  # of the zone dispatch
    per_client_clients: int  # of the per-client dispatch
    paused_clients: int  # of the dispatch paused, edited and resumed
    workers: int = 3
    send_concurrency: int = 10  # per worker: the most sends a kill can leave half-done
    latency_ms: float = 100.0  # the gateway's, plus up to `jitter_ms`
    jitter_ms: float = 100.0
    fault_gap_s: tuple[float, float] = (15.0, 30.0)
    # None: one fault every `fault_gap_s`, kinds drawn in shuffled rounds of all eight; a
    # number: exactly that many of each kind, spread evenly over the run.
    faults_per_kind: int | None = None
    outage_s: tuple[float, float] = (10.0, 60.0)
    gateway_fault_s: tuple[float, float] = (10.0, 30.0)  # latency, garbage, throttle
    spike_ms: tuple[float, float] = (1000.0, 3000.0)
    down_s: tuple[float, float] = (1.0, 5.0)  # a killed process stays down this long
    users: int = 12  # API users, two of them writers

    @property
    def seconds(self) -> float:
        return self.minutes * 60


DEFAULT_PROFILE = Profile(
    minutes=10, clients=100_000, per_client_clients=5_000, paused_clients=5_000
)
# The test suite's: about two minutes, two faults of each kind.
SHORT_PROFILE = Profile(
    minutes=2,
    clients=5_000,
    per_client_clients=300,
    paused_clients=500,
    faults_per_kind=2,
    outage_s=(5.0, 10.0),
    gateway_fault_s=(4.0, 8.0),
    down_s=(1.0, 2.0),
    users=6,
)


@dataclass(frozen=True)
class Fault:
    """One fault of the schedule."""

    at_s: float  # seconds after the run's start
    kind: str
    duration_s: float  # how long a process stays down, or the gateway misbehaves
    worker: int = 1  # which worker process (from 1), for the worker faults
    value: float = 0.0  # the latency of a spike (ms), the Retry-After of a throttle (s)

    def describe(self) -> str:
        what = {
            WORKER_KILL: f"kill -9 of worker-{self.worker}, down {self.duration_s:.1f} s",
            WORKER_TERM: f"SIGTERM of worker-{self.worker}",
            TEMPORAL_RESTART: f"kill -9 of Temporal, down {self.duration_s:.1f} s",
            POSTGRES_RESTART: f"kill -9 of PostgreSQL, down {self.duration_s:.1f} s",
            GATEWAY_OUTAGE: f"gateway outage for {self.duration_s:.0f} s",
            LATENCY_SPIKE: f"latency {self.value:.0f} ms for {self.duration_s:.0f} s",
            GARBAGE: f"garbage answers for {self.duration_s:.0f} s",
            THROTTLE: f"429 with Retry-After {self.value:.0f} s for {self.duration_s:.0f} s",
        }
        return what[self.kind]


def fault_schedule(profile: Profile, rng: random.Random) -> list[Fault]:
    """The faults of a run, in order of their start. None in the last gap of the run, so that
    the last one has begun its effect before the load stops."""
    end = profile.seconds - profile.fault_gap_s[0]
    if profile.faults_per_kind is not None:
        kinds = [kind for kind in FAULT_KINDS for _ in range(profile.faults_per_kind)]
        rng.shuffle(kinds)
        first = min(10.0, end / 4)
        step = (end - first) / max(1, len(kinds) - 1)
        moments = [first + step * index for index in range(len(kinds))]
    else:
        kinds, moments = [], []
        at = rng.uniform(*profile.fault_gap_s)
        bag: list[str] = []
        while at < end:
            if not bag:
                bag = list(FAULT_KINDS)
                rng.shuffle(bag)
            kinds.append(bag.pop())
            moments.append(at)
            at += rng.uniform(*profile.fault_gap_s)
    return [_fault(profile, rng, kind, at) for kind, at in zip(kinds, moments, strict=True)]


def _fault(profile: Profile, rng: random.Random, kind: str, at: float) -> Fault:
    worker = rng.randint(1, profile.workers)
    if kind == GATEWAY_OUTAGE:
        return Fault(at, kind, rng.uniform(*profile.outage_s))
    if kind == LATENCY_SPIKE:
        return Fault(
            at, kind, rng.uniform(*profile.gateway_fault_s), value=rng.uniform(*profile.spike_ms)
        )
    if kind == THROTTLE:
        return Fault(at, kind, rng.uniform(*profile.gateway_fault_s), value=rng.randint(1, 5))
    if kind == GARBAGE:
        return Fault(at, kind, rng.uniform(*profile.gateway_fault_s))
    return Fault(at, kind, rng.uniform(*profile.down_s), worker=worker)


@dataclass(frozen=True)
class Opening:
    """A window's edge in one zone: the instant its local time crosses the edge."""

    zone: str
    at: datetime


@dataclass(frozen=True)
class DispatchPlan:
    """One of the run's three dispatches."""

    name: str  # zones, per_client, paused
    tag: str  # its clients' tag (each dispatch has clients of its own)
    clients: int
    body: dict[str, Any]  # POST /api/v1/dispatches
    opens: Opening | None = None
    closes: Opening | None = None
    edit_at: datetime | None = None  # the paused dispatch: paused, edited, resumed from here
    resume_at: datetime | None = None
    edited_text: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


ZONES_TAG = "soak-zones"
PER_CLIENT_TAG = "soak-per-client"
PAUSED_TAG = "soak-paused"
ZONES_TEXT = "Soak: the zones dispatch"
PER_CLIENT_TEXT = "Soak: one workflow per client"
BEFORE_EDIT_TEXT = "Soak: the text before the edit"
AFTER_EDIT_TEXT = "Soak: the text after the edit"


def audiences(profile: Profile) -> list[tuple[str, int]]:
    """Each dispatch's clients: (tag, how many), their zones Russia's, taken in turn."""
    return [
        (ZONES_TAG, profile.clients),
        (PER_CLIENT_TAG, profile.per_client_clients),
        (PAUSED_TAG, profile.paused_clients),
    ]


def plan_dispatches(profile: Profile, *, now: datetime, rng: random.Random) -> list[DispatchPlan]:
    """The zone dispatch, the per-client one and the paused one, timed from `now`.

    The zone dispatch's window opens in one zone about 30 % into the run and closes in the zone
    ZONE_SPAN_HOURS east of it about 30 % later; the zones between are open from the start,
    the others never before its end (their messages expire). The per-client dispatch's window
    opens in another zone about 45 % into the run. The third has no window and starts 30 % into
    the run: it is paused PAUSE_AFTER later (while it sends, whatever the machine's pace), its
    text edited, and resumed 45 % into the run.
    """
    run = timedelta(seconds=profile.seconds)
    # Zones with ZONE_SPAN_HOURS zones east of them.
    opening_zone = rng.choice(RUSSIA_ZONES[: len(RUSSIA_ZONES) - ZONE_SPAN_HOURS])
    opens_at = _next_minute(now + run * 0.3)
    closes_at = max(_next_minute(now + run * 0.6), opens_at + timedelta(minutes=1))
    span = timedelta(hours=ZONE_SPAN_HOURS) + (closes_at - opens_at)
    closing_zone = RUSSIA_ZONES[RUSSIA_ZONES.index(opening_zone) + ZONE_SPAN_HOURS]
    zones = DispatchPlan(
        name="zones",
        tag=ZONES_TAG,
        clients=profile.clients,
        body=_body(
            ZONES_TEXT, ZONES_TAG, now, now + run * 0.85, _window(opens_at, opening_zone, span)
        ),
        opens=Opening(opening_zone, opens_at),
        closes=Opening(closing_zone, closes_at),
    )
    per_client_zone = rng.choice([zone for zone in RUSSIA_ZONES if zone != opening_zone])
    per_client_opens = _next_minute(now + run * 0.45)
    per_client = DispatchPlan(
        name="per_client",
        tag=PER_CLIENT_TAG,
        clients=profile.per_client_clients,
        body=_body(
            PER_CLIENT_TEXT,
            PER_CLIENT_TAG,
            now,
            now + run * 0.9,
            _window(per_client_opens, per_client_zone, timedelta(hours=PER_CLIENT_SPAN_HOURS)),
        )
        | {"delivery": "per_client"},
        opens=Opening(per_client_zone, per_client_opens),
    )
    paused_starts = now + run * 0.3
    paused = DispatchPlan(
        name="paused",
        tag=PAUSED_TAG,
        clients=profile.paused_clients,
        body=_body(BEFORE_EDIT_TEXT, PAUSED_TAG, paused_starts, now + run * 0.95, None),
        edit_at=paused_starts + PAUSE_AFTER,
        resume_at=now + run * 0.45,
        edited_text=AFTER_EDIT_TEXT,
    )
    return [zones, per_client, paused]


def _next_minute(instant: datetime) -> datetime:
    """The instant rounded up to a whole minute."""
    floor = instant.replace(second=0, microsecond=0)
    return floor if floor == instant else floor + timedelta(minutes=1)


def _window(opens_at: datetime, zone: str, length: timedelta) -> dict[str, str]:
    """A window opening at `opens_at` in `zone`, `length` long, as local "HH:MM" times."""
    start = opens_at.astimezone(ZoneInfo(zone))
    end = start + length
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}


def _body(
    text: str, tag: str, start: datetime, end: datetime, window: dict[str, str] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filter": {"tags": [tag]},
        "start_at": start.astimezone(UTC).isoformat(),
        "end_at": end.astimezone(UTC).isoformat(),
        "text": text,
    }
    if window is not None:
        body["window"] = window
    return body
