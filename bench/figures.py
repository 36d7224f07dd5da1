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
    workers: int = 1  # worker processes, all polling both task queues
    count_actions: bool = True  # read every history of the dispatch for its actions
    # SEND_ROUTES of the workers (bench.routes), each to a named gateway of the simulator;
    # None: no SEND_ROUTES, the one route `default` to the simulator's root gateway.
    routes: list[dict[str, Any]] | None = None
    # A personal text (bench.personal): each client gets attributes and the dispatch's text
    # names them; None: the plain text of every other run.
    text: str | None = None
    # FREQUENCY_CAP of the workers (bench.personal); None: no cap.
    frequency_cap: str | None = None
    # Tracing on in the workers and the API (core.tracing), exporting every span over OTLP/HTTP
    # to this endpoint, the bench's receiver (bench.tracing); None: off, as by default.
    tracing: str | None = None

    @property
    def name(self) -> str:
        """E.g. "1 route, 0 ms", "2 routes, 0 ms", "1 route, 0 ms, personal text",
        "1 route, 0 ms, cap 3/24h" or "1 route, 0 ms, tracing"."""
        count = len(self.routes) if self.routes else 1
        name = f"{count} route{'s' if count > 1 else ''}, {self.latency_ms:g} ms"
        name += ", personal text" if self.text else ""
        name += f", cap {self.frequency_cap}" if self.frequency_cap else ""
        return name + (", tracing" if self.tracing else "")


@dataclass
class WorkerShare:
    """One worker process's part of a dispatch, from its /metrics after the dispatch."""

    worker: str  # worker-<n>
    sent: int | None  # mailing_messages_finished_total{status="sent"}; None: not read
    share_pct: float | None  # of the sent messages of every worker together


@dataclass
class RouteShare:
    """One route's part of a dispatch: its gateway's counters and the messages recorded on it."""

    route: str
    gateway: str  # the simulator's gateway it posts to
    # The clients it serves (a client must match both); None: any.
    operator_codes: list[str] | None
    prefixes: list[str] | None
    priority: int
    received: int  # requests at its gateway, refused ones included
    accepted: int  # 200s of its gateway, duplicates included
    unique_accepted: int
    duplicates: int
    max_in_flight: int
    sent: int  # messages of the dispatch `sent` with message.route = this route
    share_pct: float | None  # of the gateways' accepted messages together


@dataclass
class ActionFigures:
    """What a dispatch costs on Temporal Cloud, which bills per action.

    `by_kind` is counted from every run of every workflow of the dispatch (its histories);
    heartbeats are not in histories and come from the server's `action` counter (before and
    after the dispatch) or, without it, an estimate. `server_by_type` is that counter's own
    account of the namespace over the same span, for comparison.
    """

    messages: int  # messages of the dispatch (the denominator)
    runs: int  # workflow runs whose histories were read
    events: int  # history events read
    by_kind: dict[str, int]  # actions by kind, heartbeats included
    not_billed: dict[str, int]  # events seen that Cloud exempts (counted by the OSS server)
    total: int
    per_1000_messages: float | None
    usd_per_million_messages: float | None  # at USD_PER_MILLION_ACTIONS
    heartbeats: int | None
    heartbeats_method: str  # "server action metric", "server RPC metric" or "estimate"
    heartbeats_estimate: int  # from the histories (see bench.actions), whatever the method
    server_total: int | None  # sum of the server's `action` deltas; None: not available
    server_per_1000_messages: float | None
    server_by_type: dict[str, int] | None
    usd_per_million_actions: float
    rules: str  # how events were counted
    note: str | None = None


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
    remote: RemoteFigures  # max_in_flight: the most requests at the gateway at once
    workers: list[WorkerShare] = field(default_factory=list)  # one per worker process
    actions: ActionFigures | None = None
    # messages_per_s over that of the 1-worker run of the same latency in this bench run
    scale_vs_one_worker: float | None = None
    one_worker_dispatch_id: int | None = None
    # With SEND_ROUTES: one per route (`remote` is then the sum of their gateways, its
    # max_in_flight the sum of their peaks); messages_per_s over that of the 1-route run of the
    # same latency and worker count in this bench run.
    routes: list[RouteShare] = field(default_factory=list)
    vs_one_route: float | None = None
    one_route_dispatch_id: int | None = None
    # A personal text's, a capped or a traced run: messages/s against the plain run at 0 ms.
    vs_plain: float | None = None
    plain_dispatch_id: int | None = None
    # A traced run: the spans the bench's receiver got from the restart on, by name.
    spans: dict[str, int] | None = None
    # CPU seconds of each worker process and of the API from the POST to completion seen
    # (their process_cpu_seconds_total): what a variant costs, whatever else shares the CPUs.
    cpu_s: dict[str, float] = field(default_factory=dict)


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
    failovers: list[Any] = field(default_factory=list)  # bench.failover.FailoverFigures
    audience: Any = None  # bench.audience.AudienceFigures
    receipts: Any = None  # bench.receipts.ReceiptFigures
    errors: list[str] = field(default_factory=list)
