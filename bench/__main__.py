"""`make bench` (python -m bench): figures of the service on its own embedded stack.

One stack for the whole run, in a temporary data directory on free ports. In order: HTTP
clients against the simulator (if bench.http_clients is there), the ceiling of one child
workflow per client, one dispatch to every client per remote latency, with right after the
0 ms one the same dispatch through two routes (`--routes`, bench.routes: SEND_ROUTES of two
routes to two named gateways of the simulator, split by operator code; "routes: 2 routes, 0 ms
/ 1 route, 0 ms = x.xx" and each route's messages), then the personal text's and the capped
runs (`--personal`, bench.personal) and the traced run (`--tracing`, bench.tracing: tracing on,
every span to a receiver in the bench's process, "1 route, 0 ms, tracing / 1 route, 0 ms" and
its spans by name), the outage run (--outage), the failover
runs (`--failover`, bench.failover: two routes serving everyone, the first gateway down for a
few seconds, refusing, and with `--failover-modes 503,hang` hanging too: the seconds to the
second route and back, the duplicates at each gateway, the ids at both), the receipts run
(`--receipts`, bench.receipts: receipts/s through POST /api/v1/receipts in lists of 1,000 and one
at a time from 50 posters, then a 0 ms dispatch without and with the simulator posting its
receipts), the audience run (a bulk import, then reads and big writes with a million messages),
and the zone run (--zones).
`--only` picks some of them. The workers and the API are restarted before each dispatch so
that each one's peak memory is its own. A table goes to stdout, JSON to bench/results/.

Workers: `--workers N` runs N worker processes (all polling both task queues, each with its own
log worker-<n>.log and metrics port); `--workers 1,3` measures each dispatch scenario once per
count, in that order, on the same stack; `--compare-one` adds a 1-worker run before the others
(`--workers 3 --compare-one` is `--workers 1,3`). For each dispatch the table gives every
worker's sent messages and share (its `mailing_messages_finished_total{status="sent"}`), the
most requests in flight at the gateway, and, for a run of more than one worker with a 1-worker
run of the same latency, `scale: N workers / 1 worker = x.xx` (messages/s POST->completed).
The two-route, outage, failover, zone and audience runs use the largest count.

Cost: for each dispatch, its Temporal Cloud actions (bench/actions.py says how they are
counted) from every history of its workflows, heartbeats from the dev server's `action` metric
(served on a port of its own), per 1,000 messages and in USD per million messages at USD 50
per million actions; `--no-actions` skips reading the histories (a big per-client dispatch
has one per client).
"""

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from bench import data, personal
from bench.audience import run_audience
from bench.ceiling import run_ceiling
from bench.failover import MODES, FailoverSettings, Mode, run_failover
from bench.figures import BenchReport, DispatchFigures, DispatchScenario
from bench.http_bench import run_http_clients
from bench.memory import PeakRss
from bench.outage import run_outage
from bench.receipts import ReceiptSettings, run_receipts
from bench.remote import SimulatorControl
from bench.report import RESULTS_DIR, machine_facts, write_results, write_table
from bench.rig import Rig
from bench.routes import split_routes
from bench.run import run_dispatch
from bench.stack import BenchStack, connect_temporal, wait_until_ready
from bench.tracing import SpanReceiver
from bench.zones import ZoneRunSettings, run_zones
from core.auth import embedded_tokens
from core.logging import configure_logging
from core.settings import Settings

log = logging.getLogger("bench")

T = TypeVar("T")

# The "delivery" values of POST /api/v1/dispatches (the API refuses others, or ignores the field
# if it predates it).
SHAPES = ("cohorts", "per_client")

# What --only may name, in the order they run.
SCENARIOS = (
    "http-clients",
    "ceiling",
    "dispatches",
    "routes",
    "personal",
    "tracing",
    "outage",
    "failover",
    "receipts",
    "audience",
    "zones",
)

RESTARTS = (
    "workers and API restarted before each dispatch scenario (per-scenario peak RSS); "
    "PostgreSQL, Temporal and the simulator run once for the whole bench (Temporal's "
    "peak RSS includes what earlier scenarios left in it)"
)


def _latencies(value: str) -> list[float]:
    try:
        return [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 0,100, got {value!r}") from None


def _workers(value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 3 or 1,3, got {value!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"worker counts of at least 1, got {value!r}")
    return counts


def worker_counts(args: argparse.Namespace) -> list[int]:
    """The worker counts each dispatch scenario runs with, in order, without repeats."""
    counts: list[int] = [1, *args.workers] if args.compare_one else list(args.workers)
    return list(dict.fromkeys(counts))


def _modes(value: str) -> list[Mode]:
    modes = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"failover modes are {', '.join(MODES)}, not {unknown}")
    return [mode for mode in MODES if mode in modes]


def _only(value: str) -> set[str]:
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}, not {value!r}")
    return names


def wanted(args: argparse.Namespace, scenario: str, switched_on: bool) -> bool:
    """Whether a scenario runs: named in --only, or, without --only, its own switch."""
    return scenario in args.only if args.only is not None else switched_on


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, rest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure dispatches end to end on a stack of the bench's own.",
        epilog="Each dispatch prints every worker's sent messages and share, the most requests "
        "in flight at the gateway, with more than one worker and a 1-worker run of the same "
        'latency "scale: N workers / 1 worker = x.xx", and its Temporal Cloud actions (from '
        "its histories, heartbeats from the dev server's action metric): total, per 1,000 "
        "messages, by kind, and USD per million messages at USD 50 per million actions.",
    )
    parser.add_argument("--clients", type=int, default=10_000, help="clients per dispatch")
    parser.add_argument(
        "--latencies",
        type=_latencies,
        default=[0.0, 100.0],
        help="remote latencies in ms, one dispatch each (empty: no dispatch)",
    )
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default=None,
        help='"delivery" of the dispatches; not sent unless given',
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per dispatch")
    parser.add_argument("--end-hours", type=float, default=3.0, help="end_at - start_at")
    parser.add_argument(
        "--send-concurrency",
        type=int,
        default=100,
        help="SEND_CONCURRENCY of each worker process",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=[1],
        metavar="N[,N...]",
        help="worker processes (each polling both task queues, its own metrics port and log "
        "worker-<n>.log); a list (e.g. 1,3) runs each dispatch scenario once per count, in "
        "that order; the 2-route, outage, failover, zone and audience runs use the largest "
        "(default 1)",
    )
    parser.add_argument(
        "--compare-one",
        action="store_true",
        help="run each dispatch scenario with 1 worker first too, and print "
        '"scale: N workers / 1 worker = x.xx" (same as listing 1 in --workers)',
    )
    parser.add_argument(
        "--no-actions",
        action="store_true",
        help="do not read the dispatches' histories to count their Temporal Cloud actions",
    )
    parser.add_argument(
        "--service-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting of the worker and the API (repeatable)",
    )
    parser.add_argument(
        "--ceiling-children", type=int, default=1000, help="children of the ceiling (0: skip)"
    )
    parser.add_argument("--ceiling-latency", type=float, default=0.0, help="ms")
    parser.add_argument("--zones", action="store_true", help="run the zone scenario too")
    parser.add_argument("--zone-clients", type=int, default=20_000)
    parser.add_argument("--zone-latency", type=float, default=0.0, help="ms")
    parser.add_argument(
        "--opening-zone",
        choices=data.RUSSIA_ZONES,
        metavar="ZONE",
        default="Europe/Moscow",
        help="the zone whose window opens about 3 minutes into the zone run",
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=0.0,
        help="seconds of remote outage in the middle of a dispatch of --clients (0: skip)",
    )
    parser.add_argument(
        "--routes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help='the two-route dispatch ("2 routes, 0 ms"): --clients at 0 ms with SEND_ROUTES of '
        "two routes to two gateways, split by operator code, against the 1-route run at 0 ms",
    )
    parser.add_argument(
        "--personal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help='the personal text\'s dispatch ("1 route, 0 ms, personal text"): --clients at 0 ms '
        "with two attributes each and a text naming them, against the plain text at 0 ms",
    )
    parser.add_argument(
        "--tracing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help='the traced dispatch ("1 route, 0 ms, tracing"): --clients at 0 ms with the '
        "workers and the API exporting every span over OTLP/HTTP to a receiver in the bench's "
        "process, against the plain run at 0 ms",
    )
    parser.add_argument(
        "--failover",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the failover runs: routes a and b (priorities 1, 2) serving everyone, gateway a "
        "down for --failover-outage seconds a quarter into a dispatch",
    )
    parser.add_argument(
        "--failover-modes",
        type=_modes,
        default=["503"],
        metavar="MODE[,MODE]",
        help='how gateway a is down, one run each: "503" (refuses), "hang" (holds each send '
        "past the send timeout: about 35 s more) (default 503)",
    )
    parser.add_argument("--failover-clients", type=int, default=10_000)
    parser.add_argument(
        "--failover-latency", type=float, default=150.0, help="ms, of both gateways"
    )
    parser.add_argument("--failover-outage", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--receipts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the receipts run: receipts of a sent dispatch through POST /api/v1/receipts in "
        "lists of 1,000, then one at a time; then a dispatch at 0 ms without and with the "
        "simulator posting its receipts",
    )
    parser.add_argument(
        "--receipts-messages",
        type=int,
        default=100_000,
        help="sent messages receipted in lists, and as many for one at a time (0: neither)",
    )
    parser.add_argument(
        "--receipts-posters", type=int, default=4, help="concurrent posters of the lists"
    )
    parser.add_argument(
        "--receipts-single-posters",
        type=int,
        default=50,
        help="concurrent posters of one receipt at a time",
    )
    parser.add_argument(
        "--receipts-single-seconds",
        type=float,
        default=10.0,
        help="how long the one-at-a-time posters post",
    )
    parser.add_argument(
        "--receipts-clients",
        type=int,
        default=10_000,
        help="clients of the dispatch without and with receipts flowing (0: skip it)",
    )
    parser.add_argument(
        "--receipts-rounds",
        type=int,
        default=1,
        help="pairs of that dispatch, each without then with receipts",
    )
    parser.add_argument(
        "--only",
        type=_only,
        default=None,
        metavar="SCENARIO[,...]",
        help=f"run only these, whatever the other switches say: {', '.join(SCENARIOS)} "
        "(outage still needs --outage SECONDS); e.g. --only dispatches,routes --latencies 0",
    )
    parser.add_argument("--no-http-clients", action="store_true", help="skip the HTTP clients")
    parser.add_argument(
        "--audience-rows",
        type=int,
        default=1_000_000,
        help="rows of the bulk import, and messages of the statistics run (0: skip)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the data directory and its logs"
    )
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    settings = {key: value for key, value in vars(args).items() if key != "service_env"}
    settings["results_dir"] = str(args.results_dir)
    settings["only"] = None if args.only is None else sorted(args.only)
    settings["service_env"] = dict(args.service_env)
    return settings


async def run_bench(
    stack: BenchStack, memory: PeakRss, args: argparse.Namespace, report: BenchReport
) -> None:
    """Fills `report` scenario by scenario, so that an interrupted run still has figures."""
    temporal = await connect_temporal(stack.temporal_address)
    await wait_until_ready(stack, temporal)
    db = await data.connect(stack.database_url)
    try:
        # The API checks tokens signed with the key under the stack's DATA_DIR.
        token = embedded_tokens(Settings(data_dir=stack.data_dir, _env_file=None)).mint(
            subject="bench"
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            simulator = SimulatorControl(http, stack.simulator_url)
            rig = Rig(stack, temporal, http, simulator, memory, db)
            await _scenarios(rig, args, report)
    finally:
        await db.close()


async def _scenarios(rig: Rig, args: argparse.Namespace, report: BenchReport) -> None:
    if wanted(args, "http-clients", not args.no_http_clients):
        report.http_clients = await _guarded(
            rig,
            report,
            "http clients",
            run_http_clients(simulator=rig.simulator, send_api_url=rig.stack.send_api_url),
        )
    if wanted(args, "ceiling", args.ceiling_children > 0):
        report.ceiling = await _guarded(
            rig,
            report,
            "ceiling",
            run_ceiling(
                temporal=rig.temporal,
                simulator=rig.simulator,
                send_api_url=rig.stack.send_api_url,
                children=args.ceiling_children,
                latency_ms=args.ceiling_latency,
                concurrency=args.send_concurrency,
                timeout_s=args.timeout,
            ),
        )
    counts = worker_counts(args)
    routes_pending = wanted(args, "routes", args.routes)
    personal_pending = wanted(args, "personal", args.personal)
    tracing_pending = wanted(args, "tracing", args.tracing)
    latencies = args.latencies if wanted(args, "dispatches", True) else []
    for latency in latencies:
        measured: list[DispatchFigures] = []
        for workers in counts:
            figures = await _guarded(
                rig,
                report,
                f"dispatch at {latency:g} ms on {workers} worker(s)",
                run_dispatch(rig, _dispatch_scenario(args, latency_ms=latency, workers=workers)),
            )
            if figures is not None:
                measured.append(figures)
                report.dispatches.append(figures)
        one_worker = next((f for f in measured if f.scenario.workers == 1), None)
        if one_worker is not None:
            for figures in measured:
                if figures.scenario.workers > 1:
                    set_scale(figures, one_worker)
        if latency == 0 and routes_pending:
            # Right after the 1-route run it is compared with: the same server, as warm.
            await _two_routes(rig, args, report)
            routes_pending = False
        if latency == 0 and personal_pending:
            await _personal(rig, args, report)
            personal_pending = False
        if latency == 0 and tracing_pending:
            await _tracing(rig, args, report)
            tracing_pending = False
    if routes_pending:
        await _two_routes(rig, args, report)
    if personal_pending:
        await _personal(rig, args, report)
    if tracing_pending:
        await _tracing(rig, args, report)
    rig.stack.workers = max(counts)
    if wanted(args, "outage", True) and args.outage > 0:
        report.outage = await _guarded(
            rig,
            report,
            "outage run",
            run_outage(rig, clients=args.clients, outage_s=args.outage, timeout_s=args.timeout),
        )
    if wanted(args, "failover", args.failover):
        for mode in args.failover_modes:
            failover = await _guarded(
                rig,
                report,
                f"failover run ({mode})",
                run_failover(
                    rig,
                    FailoverSettings(
                        clients=args.failover_clients,
                        latency_ms=args.failover_latency,
                        outage_s=args.failover_outage,
                        mode=mode,
                        timeout_s=args.timeout,
                        workers=max(counts),
                    ),
                ),
            )
            if failover is not None:
                report.failovers.append(failover)
    if wanted(args, "receipts", args.receipts):
        report.receipts = await _guarded(
            rig,
            report,
            "receipts run",
            run_receipts(
                rig,
                ReceiptSettings(
                    messages=args.receipts_messages,
                    list_posters=args.receipts_posters,
                    single_posters=args.receipts_single_posters,
                    single_seconds=args.receipts_single_seconds,
                    dispatch_clients=args.receipts_clients,
                    rounds=args.receipts_rounds,
                    send_concurrency=args.send_concurrency,
                    timeout_s=args.timeout,
                    workers=max(counts),
                ),
            ),
        )
    if wanted(args, "audience", args.audience_rows > 0):
        report.audience = await _guarded(
            rig, report, "audience run", run_audience(rig, rows=args.audience_rows)
        )
    if wanted(args, "zones", args.zones):
        # Last: its deleted dispatch leaves children asleep on the server until their window.
        report.zones = await _guarded(
            rig,
            report,
            "zone run",
            run_zones(
                rig,
                ZoneRunSettings(
                    clients=args.zone_clients,
                    latency_ms=args.zone_latency,
                    shape=args.shape,
                    opening_zone=args.opening_zone,
                    timeout_s=args.timeout,
                ),
            ),
        )


def _dispatch_scenario(
    args: argparse.Namespace,
    *,
    latency_ms: float,
    workers: int,
    routes: list[dict[str, Any]] | None = None,
) -> DispatchScenario:
    return DispatchScenario(
        clients=args.clients,
        latency_ms=latency_ms,
        shape=args.shape,
        send_concurrency=args.send_concurrency,
        timeout_s=args.timeout,
        end_after_hours=args.end_hours,
        workers=workers,
        count_actions=not args.no_actions,
        routes=routes,
    )


async def _two_routes(rig: Rig, args: argparse.Namespace, report: BenchReport) -> None:
    """The 0 ms dispatch through two routes split by operator code, on the most workers."""
    workers = max(worker_counts(args))
    scenario = _dispatch_scenario(
        args, latency_ms=0.0, workers=workers, routes=split_routes(rig, args.clients)
    )
    figures = await _guarded(
        rig, report, "dispatch through 2 routes at 0 ms", run_dispatch(rig, scenario)
    )
    if figures is None:
        return
    report.dispatches.append(figures)
    one_route = next(
        (
            f
            for f in report.dispatches
            if not f.routes and f.scenario.latency_ms == 0 and f.scenario.workers == workers
        ),
        None,
    )
    if one_route is not None:
        set_route_ratio(figures, one_route)


async def _personal(rig: Rig, args: argparse.Namespace, report: BenchReport) -> None:
    """The 0 ms dispatch with a personal text, then with the frequency cap on, on the most
    workers, each against the plain one."""
    workers = max(worker_counts(args))
    scenario = _dispatch_scenario(args, latency_ms=0.0, workers=workers)
    scenario.text = personal.TEXT
    await _against_plain(
        rig,
        report,
        "dispatch with a personal text at 0 ms",
        run_dispatch(rig, scenario, before_post=lambda: personal.give_attributes(rig)),
        workers,
    )
    scenario = _dispatch_scenario(args, latency_ms=0.0, workers=workers)
    scenario.frequency_cap = personal.CAP
    await _against_plain(
        rig, report, "dispatch with the frequency cap at 0 ms", run_dispatch(rig, scenario), workers
    )


async def _tracing(rig: Rig, args: argparse.Namespace, report: BenchReport) -> None:
    """The 0 ms dispatch with tracing on, every span exported to a receiver in this process,
    on the most workers, against the plain one."""
    workers = max(worker_counts(args))
    async with SpanReceiver() as receiver:
        scenario = _dispatch_scenario(args, latency_ms=0.0, workers=workers)
        scenario.tracing = receiver.endpoint
        figures = await _against_plain(
            rig, report, "dispatch with tracing at 0 ms", run_dispatch(rig, scenario), workers
        )
        if figures is not None:
            figures.spans = await receiver.settled()


async def _against_plain(
    rig: Rig,
    report: BenchReport,
    what: str,
    run: Coroutine[Any, Any, DispatchFigures],
    workers: int,
) -> DispatchFigures | None:
    figures = await _guarded(rig, report, what, run)
    if figures is None:
        return None
    report.dispatches.append(figures)
    plain = next(
        (
            f
            for f in report.dispatches
            if not f.routes
            and not f.scenario.text
            and not f.scenario.frequency_cap
            and not f.scenario.tracing
            and f.scenario.latency_ms == 0
            and f.scenario.workers == workers
        ),
        None,
    )
    if plain is not None:
        figures.plain_dispatch_id = plain.dispatch_id
        if figures.messages_per_s and plain.messages_per_s:
            figures.vs_plain = round(figures.messages_per_s / plain.messages_per_s, 2)
    return figures


def set_route_ratio(figures: DispatchFigures, one_route: DispatchFigures) -> None:
    """messages/s (POST->completed) against the 1-route run; None unless both completed."""
    figures.one_route_dispatch_id = one_route.dispatch_id
    if figures.messages_per_s and one_route.messages_per_s:
        figures.vs_one_route = round(figures.messages_per_s / one_route.messages_per_s, 2)


def set_scale(figures: DispatchFigures, one_worker: DispatchFigures) -> None:
    """messages/s (POST->completed) against the 1-worker run; None unless both completed."""
    figures.one_worker_dispatch_id = one_worker.dispatch_id
    if figures.messages_per_s and one_worker.messages_per_s:
        figures.scale_vs_one_worker = round(figures.messages_per_s / one_worker.messages_per_s, 2)


async def _guarded(rig: Rig, report: BenchReport, name: str, scenario: Awaitable[T]) -> T | None:
    """Runs one scenario; its failure is recorded and the next one runs, unless the stack died
    (then the bench stops: every later figure would be a failure too)."""
    try:
        return await scenario
    except Exception as error:
        log.exception("%s failed", name)
        report.errors.append(f"{name}: {error!r}")
        rig.stack.check_alive()
        return None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level="INFO")
    # Start-up chatter (every pg_ctl command, each migration, the SDK's worker lines) would
    # bury the bench's own progress lines.
    for noisy in ("temporalio", "pgserver", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM stops the bench like Ctrl-C: through the finally below, stopping the stack.
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = Path(tempfile.mkdtemp(prefix="mailing-bench-"))
    report = BenchReport(
        started_at=datetime.now(UTC).isoformat(),
        finished_at="",
        machine=machine_facts(),
        settings=settings_of(args),
        stack={"restarts": RESTARTS, "data_dir": str(data_dir)},
    )
    memory = PeakRss()
    memory.start()
    stack = BenchStack(
        data_dir=data_dir,
        send_concurrency=args.send_concurrency,
        extra_env=dict(args.service_env),
        memory=memory,
        workers=worker_counts(args)[0],
    )
    code = 0
    try:
        stack.start()
        asyncio.run(run_bench(stack, memory, args, report))
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the stack")
        report.errors.append("interrupted")
        code = 130
    except (RuntimeError, TimeoutError, OSError) as error:
        log.error("bench failed: %s", error)
        report.errors.append(f"bench failed: {error!r}")
        code = 1
    finally:
        stack.stop()
        memory.stop()
        if args.keep_data:
            log.info("data and logs kept in %s", data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    report.finished_at = datetime.now(UTC).isoformat()
    for path in write_results(report, args.results_dir):
        log.info("wrote %s", path)
    write_table(report)
    return code


if __name__ == "__main__":
    sys.exit(main())
