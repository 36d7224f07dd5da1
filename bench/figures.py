"""What a bench run measures: one dataclass per scenario result, serialised as they are."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delays:
    """Seconds from a message's earliest allowed instant to its sent_at, over sent messages."""

    count: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None


@dataclass
class WorkflowSize:
    """One workflow run's history as the server describes it."""

    workflow_id: str
    run_id: str
    history_length: int  # events
    history_size_bytes: int


@dataclass
class HistoryFigures:
    """The largest history among a dispatch's workflows, and how many there are."""

    largest: WorkflowSize | None  # by bytes
    longest_events: int | None  # the most events in one run (may be another run)
    described: int  # runs described to find the largest
    parent_runs: int | None  # runs of dispatch-<id> (more than one after continue-as-new)
    executions: int | None  # every run of dispatch-<id> and of dispatch-<id>-*; None if unknown
    method: str  # "visibility" (list/count queries) or "known ids" (describe only)
    note: str | None = None


@dataclass
class RemoteFigures:
    """The simulator's counters over one scenario."""

    received: int
    accepted: int
    unique_accepted: int
    duplicates: int
    max_in_flight: int


@dataclass
class DispatchScenario:
    """Settings of one measured dispatch."""

    clients: int
    latency_ms: float
    shape: str | None  # the "delivery" sent in the POST; None: not sent (server default)
    send_concurrency: int
    timeout_s: float
    end_after_hours: float


@dataclass
class DispatchFigures:
    """One dispatch to every client, from the POST to status completed."""

    scenario: DispatchScenario
    dispatch_id: int
    delivery: str | None  # as the API reports it; None when the API has no such field
    insert_s: float  # bulk insert of the clients (COPY), not part of the dispatch
    completed: bool
    timed_out: bool
    elapsed_s: float  # POST to completion seen (or to the timeout)
    messages: int
    messages_per_s: float | None  # messages / elapsed_s; None on a timeout
    db_messages_per_s: float | None  # messages / (max(updated_at) - dispatch created_at)
    statuses: dict[str, int]
    delays: Delays
    history: HistoryFigures
    peak_rss_mb: dict[str, float]  # per process (with its children), sampled every 0.25 s
    remote: RemoteFigures


@dataclass
class CeilingFigures:
    """A bare parent starting one minimal child per client, each posting once: the most the
    one-child-per-client shape can move on this server, whatever the service does."""

    children: int
    latency_ms: float
    children_per_run: int
    elapsed_s: float
    children_per_s: float | None
    completed: bool
    largest_parent_history: WorkflowSize | None
    remote: RemoteFigures


@dataclass
class ZoneFigures:
    """One zone's messages in the zone run."""

    zone: str
    kind: str  # "opening", "immediate" (inside the window at start) or "later" (after end_at)
    opens_at: str | None  # ISO instant the zone may first be sent to; None: not before end_at
    clients: int
    statuses: dict[str, int]
    delays: Delays


@dataclass
class ZoneRunFigures:
    """Clients spread over Russia's zones; a window that opens in one zone minutes into the run."""

    clients: int
    latency_ms: float
    shape: str | None
    dispatch_id: int
    window: dict[str, str]
    opening_zone: str
    opening_at: str
    opening_zone_done: bool  # every message of the opening zone final before the timeout
    elapsed_s: float  # POST to the opening zone done (or to the timeout)
    opening_delays: Delays  # from the zone's opening to sent_at
    immediate_delays: Delays  # every immediate zone together, from start_at to sent_at
    immediate_messages_per_s: float | None  # immediate zones' messages / (last sent_at - POST)
    zones: list[ZoneFigures]
    history: HistoryFigures
    peak_rss_mb: dict[str, float]
    remote: RemoteFigures
    deleted: bool  # the DELETE that stops the rest answered 204


@dataclass
class BenchReport:
    """Everything one `make bench` run writes to bench/results."""

    started_at: str
    finished_at: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    stack: dict[str, Any]
    http_clients: dict[str, Any] | None = None
    ceiling: CeilingFigures | None = None
    dispatches: list[DispatchFigures] = field(default_factory=list)
    zones: ZoneRunFigures | None = None
    outage: Any = None  # bench.outage.OutageFigures
    audience: Any = None  # bench.audience.AudienceFigures
    errors: list[str] = field(default_factory=list)
