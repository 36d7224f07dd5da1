"""The receipts run: delivery receipts through POST /api/v1/receipts, and what they cost a send.

1. Two dispatches of `messages` messages each, inserted by SQL as already `sent`. Receipts for
   the first go in lists of 1,000 from a few concurrent posters, until every one is answered
   (each list is applied when its answer comes: receipts/s over the whole); for the second one
   at a time from 50 concurrent posters, for a fixed time. 5 % of the receipts say a failure
   (undelivered, expired, rejected in turn); afterwards each dispatch's messages must be as
   many `delivered` and `undelivered` as the answered receipts said. The CPU of the API,
   PostgreSQL and the bench process (the posters) over each part tells where the time goes.
2. A dispatch at 0 ms with no receipts, then the same dispatch while the simulator posts its
   receipts (lists as a gateway gathers them, a few duplicates, a few before the send's answer)
   to the API with a `receipts:write` token: messages/s of the two side by side. Once the second
   completes every message must end as the simulator decided it.

The posters are aiohttp (the send path's client): httpx costs about 5 ms of CPU per request
here (bench.http_clients), which would measure the bench process rather than the API. The API
logs at WARNING, as everywhere in the bench, so its INFO line per receipt is not written;
`--service-env LOG_LEVEL=INFO --service-env LOG_JSON=true` measures it as deployed.
"""

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench import data
from bench.figures import DispatchFigures, DispatchScenario
from bench.rig import Rig, prepare
from bench.run import run_dispatch
from core.auth import Permission, embedded_tokens
from core.settings import Settings

log = logging.getLogger(__name__)

RECEIPTS_PATH = "/api/v1/receipts"
LIST_SIZE = 1000  # the most the endpoint takes in one request
OUTCOMES = ("applied", "waiting", "duplicate", "out_of_date", "unknown")
# One receipt in FAILING_EVERY says the message was not delivered, with these in turn.
FAILING_EVERY = 20
FAILURES = (
    ("undelivered", "DLR 01 absent subscriber"),
    ("expired", "DLR 27 validity period expired"),
    ("rejected", "DLR 11 unknown subscriber"),
)
ROUTE = "default"  # the route of a dispatch without SEND_ROUTES
SEED = 20261201
REQUEST_TIMEOUT_S = 60.0
# The targets on this machine.
LISTS_TARGET_PER_S = 20_000.0
SINGLE_TARGET_PER_S = 1_000.0
SEND_RATE_TOLERANCE = 0.10  # the send rate with receipts at most this much below without
# The simulator's receipts in the dispatch with receipts flowing (simulator.gateways fields).
SIMULATOR_RECEIPTS: dict[str, Any] = {
    "receipt_delay_min_ms": 100,
    "receipt_delay_max_ms": 1000,
    "undelivered_rate": 0.05,
    "receipt_duplicate_rate": 0.01,
    "receipt_before_answer_rate": 0.01,
    "receipt_batch_size": 100,
    "receipt_batch_ms": 50,
}
# How long every receipt of the dispatch may take to be applied after it completes.
APPLIED_TIMEOUT_S = 30.0
APPLIED_POLL_S = 0.2
MAX_ERRORS_KEPT = 3


@dataclass(frozen=True)
class ReceiptSettings:
    messages: int  # sent messages receipted in lists, and as many for one at a time
    list_posters: int
    single_posters: int
    single_seconds: float  # how long the one-at-a-time posters post
    dispatch_clients: int  # of the dispatch with and without receipts (0: not run)
    rounds: int  # pairs of that dispatch, without then with receipts
    send_concurrency: int
    timeout_s: float  # of each dispatch, and of the lists' posting
    workers: int


@dataclass
class RequestLatency:
    """Milliseconds from a request's start to its answer read, over the answered ones."""

    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class PostingFigures:
    """Receipts of one dispatch posted through the endpoint by concurrent posters."""

    mode: str  # "lists" or "one at a time"
    per_request: int  # receipts per request (1: each alone, as an object)
    posters: int
    dispatch_id: int
    requests: int  # answered, whatever their status
    receipts: int  # in the requests answered 200
    failed_requests: int  # answered otherwise, or not answered
    elapsed_s: float  # first request to last answer
    receipts_per_s: float | None
    latency: RequestLatency
    outcomes: dict[str, int]  # the answers' counts, summed
    posted: dict[str, int]  # what the receipts answered 200 said: delivered / undelivered
    statuses: dict[str, int]  # the dispatch's messages afterwards
    statuses_match: bool  # as many delivered and undelivered messages as posted
    cpu_s: dict[str, float]  # CPU seconds of each process meanwhile (see cpu_seconds)
    target_per_s: float
    target_met: bool
    errors: list[str] = field(default_factory=list)  # the first few failures


@dataclass
class FlowFigures:
    """One dispatch at 0 ms without receipts, then the same while the simulator posts them."""

    order: str  # which of the two ran first
    without: DispatchFigures
    with_receipts: DispatchFigures
    ratio: float | None  # messages/s with receipts / without; None unless both completed
    target_ratio: float  # 1 - SEND_RATE_TOLERANCE
    target_met: bool  # ratio >= target_ratio
    simulator: dict[str, Any]  # its receipt switches (the token left out)
    stored_during: int  # receipts stored by the API between the POST and completed
    stored_per_s: float | None  # stored_during / the dispatch's elapsed_s
    simulator_posted: int  # receipts the simulator posted with success, duplicates included
    simulator_failed: int  # receipts whose post failed for good
    all_applied: bool  # no message left `sent`, none waiting, within APPLIED_TIMEOUT_S
    # Seconds from completed (POST + elapsed_s) to the last message decided by a receipt.
    last_decided_after_s: float | None
    statuses: dict[str, int]  # once every receipt is applied
    mismatched: int  # messages whose status is not what the simulator decided
    # CPU seconds of each process from the POST until the figures were read (shortly after
    # completed), without and with receipts
    cpu_without_s: dict[str, float]
    cpu_with_s: dict[str, float]


@dataclass
class ReceiptFigures:
    """The receipts run: the two ways of posting, and the dispatch pairs."""

    messages: int  # sent messages of each of the two posting parts
    lists: PostingFigures | None = None
    single: PostingFigures | None = None
    flows: list[FlowFigures] = field(default_factory=list)
    # Over the pairs that both completed: mean messages/s without and with receipts, the
    # ratio of the two, and that against the target.
    flow_pairs: int = 0
    flow_mean_without: float | None = None
    flow_mean_with: float | None = None
    flow_mean_ratio: float | None = None
    flow_target_met: bool | None = None


def gateway_token(rig: Rig) -> str:
    """A token that may only post receipts, as a gateway's callback holds."""
    settings = Settings(data_dir=rig.stack.data_dir, _env_file=None)
    return embedded_tokens(settings).mint(
        subject="bench-gateway", permissions=frozenset({Permission.RECEIPTS_WRITE})
    )


async def run_receipts(rig: Rig, settings: ReceiptSettings) -> ReceiptFigures:
    figures = ReceiptFigures(messages=settings.messages)
    token = gateway_token(rig)
    if settings.messages > 0:
        await prepare(
            rig,
            clients=2 * settings.messages,
            zones=[data.DEFAULT_ZONE],
            latency_ms=0.0,
            workers=settings.workers,
        )
        lists_id = await insert_sent(rig, count=settings.messages, offset=0)
        single_id = await insert_sent(rig, count=settings.messages, offset=settings.messages)
        await rig.db.execute("ANALYZE message")
        url = f"{rig.stack.api_url}{RECEIPTS_PATH}"
        ids = await _shuffled_ids(rig, lists_id)
        figures.lists = await post_receipts(
            rig,
            url=url,
            token=token,
            mode="lists",
            dispatch_id=lists_id,
            bodies=list(_bodies(ids, per_request=LIST_SIZE)),
            posters=settings.list_posters,
            per_request=LIST_SIZE,
            seconds=settings.timeout_s,
            target_per_s=LISTS_TARGET_PER_S,
        )
        ids = await _shuffled_ids(rig, single_id)
        figures.single = await post_receipts(
            rig,
            url=url,
            token=token,
            mode="one at a time",
            dispatch_id=single_id,
            bodies=_bodies(ids, per_request=1),
            posters=settings.single_posters,
            per_request=1,
            seconds=settings.single_seconds,
            target_per_s=SINGLE_TARGET_PER_S,
        )
    if settings.dispatch_clients > 0:
        for round_ in range(settings.rounds):
            log.info("dispatch without and with receipts, round %d", round_ + 1)
            flow = await run_flow(rig, settings, token, with_first=round_ % 2 == 1)
            figures.flows.append(flow)
        set_means(figures)
    return figures


def set_means(figures: ReceiptFigures) -> None:
    """The mean messages/s without and with receipts over the pairs that both completed, and
    their ratio against the target; left None without such a pair."""
    pairs = [
        (f.without.messages_per_s, f.with_receipts.messages_per_s)
        for f in figures.flows
        if f.without.messages_per_s and f.with_receipts.messages_per_s
    ]
    if not pairs:
        return
    without = sum(plain for plain, _ in pairs) / len(pairs)
    flowing = sum(with_receipts for _, with_receipts in pairs) / len(pairs)
    figures.flow_pairs = len(pairs)
    figures.flow_mean_without = round(without, 1)
    figures.flow_mean_with = round(flowing, 1)
    figures.flow_mean_ratio = round(flowing / without, 3)
    figures.flow_target_met = figures.flow_mean_ratio >= 1 - SEND_RATE_TOLERANCE


async def insert_sent(rig: Rig, *, count: int, offset: int) -> int:
    """A completed dispatch with one `sent` message for each of `count` clients (from the
    offset-th, in id order); its id."""
    now = datetime.now(UTC)
    started = time.monotonic()
    dispatch_id = int(
        await rig.db.fetchval(
            "INSERT INTO dispatch (start_at, end_at, text, target_all, status) "
            "VALUES ($1, $2, 'bench receipts', true, 'completed') RETURNING id",
            now - timedelta(hours=1),
            now + timedelta(hours=1),
        )
    )
    await rig.db.execute(
        "INSERT INTO message (dispatch_id, client_id, phone, status, sender, attempts, sent_at,"
        " route, segments, cohort)"
        " SELECT $1, id, phone, 'sent', 'cohort', 1, now(), $4, 1, 'all'"
        " FROM (SELECT id, phone FROM client ORDER BY id LIMIT $2 OFFSET $3) AS c",
        dispatch_id,
        count,
        offset,
        ROUTE,
    )
    log.info("%d sent messages inserted in %.1f s", count, time.monotonic() - started)
    return dispatch_id


async def _shuffled_ids(rig: Rig, dispatch_id: int) -> list[int]:
    """The dispatch's message ids in a fixed random order: receipts come as phones answer."""
    rows = await rig.db.fetch("SELECT id FROM message WHERE dispatch_id = $1", dispatch_id)
    ids = [int(row["id"]) for row in rows]
    random.Random(SEED).shuffle(ids)
    return ids


@dataclass(frozen=True)
class Body:
    """One request's JSON and what its receipts say."""

    content: bytes
    receipts: int
    delivered: int


def _receipt(message_id: int, index: int, at: str) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "id": message_id,
        "status": "delivered",
        "part": 1,
        "parts": 1,
        "at": at,
        "route": ROUTE,
    }
    if index % FAILING_EVERY == FAILING_EVERY - 1:
        status, error = FAILURES[(index // FAILING_EVERY) % len(FAILURES)]
        receipt |= {"status": status, "error": error}
    return receipt


def _bodies(ids: Sequence[int], *, per_request: int) -> Iterator[Body]:
    """Requests of `per_request` receipts (1: the receipt alone, as an object)."""
    at = datetime.now(UTC).isoformat()
    for start in range(0, len(ids), per_request):
        receipts = [
            _receipt(message_id, start + offset, at)
            for offset, message_id in enumerate(ids[start : start + per_request])
        ]
        payload: Any = receipts[0] if per_request == 1 else receipts
        delivered = sum(1 for r in receipts if r["status"] == "delivered")
        yield Body(json.dumps(payload).encode(), len(receipts), delivered)


@dataclass
class _Tally:
    requests: int = 0
    receipts: int = 0
    delivered: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def failure(self, what: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(what)


async def post_receipts(
    rig: Rig,
    *,
    url: str,
    token: str,
    mode: str,
    dispatch_id: int,
    bodies: Iterable[Body],
    posters: int,
    per_request: int,
    seconds: float,
    target_per_s: float,
) -> PostingFigures:
    """Posts `bodies` from `posters` concurrent tasks until they run out or `seconds` pass."""
    queue = iter(bodies)
    tally = _Tally()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=posters)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:

        async def poster(deadline: float) -> None:
            for body in queue:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body.content) as response:
                        payload = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    tally.failure(f"{type(error).__name__}: {error}")
                    continue
                tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                tally.requests += 1
                if status != 200:
                    tally.failure(f"{status} {payload[:300]!r}")
                else:
                    answer = json.loads(payload)
                    tally.receipts += body.receipts
                    tally.delivered += body.delivered
                    tally.outcomes.update({key: int(answer[key]) for key in OUTCOMES})
                if time.monotonic() >= deadline:
                    return

        log.info("receipts %s: %d posters, %d per request", mode, posters, per_request)
        cpu_before = cpu_seconds(rig)
        started = time.monotonic()
        await asyncio.gather(*(poster(started + seconds) for _ in range(posters)))
        elapsed = time.monotonic() - started
        cpu = cpu_spent(cpu_before, cpu_seconds(rig))
    statuses = await data.status_counts(rig.db, dispatch_id)
    posted = {"delivered": tally.delivered, "undelivered": tally.receipts - tally.delivered}
    matches = all(statuses.get(status, 0) == count for status, count in posted.items())
    rate = tally.receipts / elapsed if elapsed > 0 and tally.receipts else None
    figures = PostingFigures(
        mode=mode,
        per_request=per_request,
        posters=posters,
        dispatch_id=dispatch_id,
        requests=tally.requests,
        receipts=tally.receipts,
        failed_requests=tally.failed,
        elapsed_s=round(elapsed, 2),
        receipts_per_s=None if rate is None else round(rate, 1),
        latency=_latency(tally.latencies_ms),
        outcomes={key: tally.outcomes[key] for key in OUTCOMES},
        posted=posted,
        statuses=statuses,
        statuses_match=matches,
        cpu_s=cpu,
        target_per_s=target_per_s,
        target_met=rate is not None and rate >= target_per_s and matches and not tally.failed,
        errors=tally.errors,
    )
    log.info(
        "receipts %s: %d in %.1f s, %s/s; statuses %s; CPU %s",
        mode,
        figures.receipts,
        elapsed,
        figures.receipts_per_s,
        statuses,
        cpu,
    )
    return figures


def _latency(values: list[float]) -> RequestLatency:
    if not values:
        return RequestLatency(p50_ms=None, p99_ms=None, max_ms=None)
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

    return RequestLatency(p50_ms=at(0.5), p99_ms=at(0.99), max_ms=round(ordered[-1], 1))


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process, of its live descendants and of the children it has reaped
    (PostgreSQL's backends that came and went)."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        family = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for process in family:
        try:
            child = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += float(child.user + child.system)
    return total


def cpu_seconds(rig: Rig) -> dict[str, float]:
    """CPU seconds so far (user + system) of each process of the stack by name, PostgreSQL
    with every backend, and of this one ("bench": the posters)."""
    found = {name: _tree_cpu(process.pid) for name, process in rig.stack.processes.items()}
    if rig.stack.postgres is not None:
        found["postgres"] = _tree_cpu(rig.stack.postgres.pid)
    own = psutil.Process().cpu_times()
    found["bench"] = float(own.user + own.system)
    return found


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds of each process between two readings (of the same processes)."""
    return {name: round(after[name] - before[name], 2) for name in after if name in before}


def _flow_scenario(settings: ReceiptSettings) -> DispatchScenario:
    return DispatchScenario(
        clients=settings.dispatch_clients,
        latency_ms=0.0,
        shape=None,
        send_concurrency=settings.send_concurrency,
        timeout_s=settings.timeout_s,
        end_after_hours=3.0,
        workers=settings.workers,
        count_actions=False,
    )


async def run_flow(
    rig: Rig, settings: ReceiptSettings, token: str, *, with_first: bool = False
) -> FlowFigures:
    """The dispatch without receipts and the same with the simulator posting them, in that
    order or (`with_first`) the other: alternated, rounds cancel a drift of the machine."""
    scenario = _flow_scenario(settings)
    if with_first:
        flowing = await _flowing(rig, scenario, token)
        without, cpu_without = await _plain(rig, scenario)
    else:
        without, cpu_without = await _plain(rig, scenario)
        flowing = await _flowing(rig, scenario, token)
    r = flowing.figures
    ratio = (
        round(r.messages_per_s / without.messages_per_s, 3)
        if r.messages_per_s and without.messages_per_s
        else None
    )
    return FlowFigures(
        order="with receipts first" if with_first else "without receipts first",
        without=without,
        with_receipts=r,
        ratio=ratio,
        target_ratio=1 - SEND_RATE_TOLERANCE,
        target_met=ratio is not None and ratio >= 1 - SEND_RATE_TOLERANCE,
        simulator=dict(SIMULATOR_RECEIPTS),
        stored_during=flowing.stored,
        stored_per_s=round(flowing.stored / r.elapsed_s, 1) if r.elapsed_s else None,
        simulator_posted=int(flowing.stats.get("receipts_posted", 0)),
        simulator_failed=int(flowing.stats.get("receipts_failed", 0)),
        all_applied=flowing.applied,
        last_decided_after_s=flowing.last_decided_after_s,
        statuses=flowing.statuses,
        mismatched=flowing.mismatched,
        cpu_without_s=cpu_without,
        cpu_with_s=flowing.cpu,
    )


async def _plain(rig: Rig, scenario: DispatchScenario) -> tuple[DispatchFigures, dict[str, float]]:
    """The dispatch with no receipts; its CPU by process."""
    before: dict[str, float] = {}

    async def measure() -> None:
        before.update(cpu_seconds(rig))

    figures = await run_dispatch(rig, scenario, before_post=measure)
    return figures, cpu_spent(before, cpu_seconds(rig))


@dataclass
class _Flowing:
    """The dispatch with receipts and what became of them, read before the next scenario's
    fresh tables and simulator."""

    figures: DispatchFigures
    cpu: dict[str, float]
    applied: bool
    last_decided_after_s: float | None
    stats: dict[str, Any]
    stored: int
    statuses: dict[str, int]
    mismatched: int


async def _flowing(rig: Rig, scenario: DispatchScenario, token: str) -> _Flowing:
    before: dict[str, float] = {}

    async def switch_on() -> None:
        await rig.simulator.configure(
            receipts_url=f"{rig.stack.api_url}{RECEIPTS_PATH}",
            receipts_token=token,
            **SIMULATOR_RECEIPTS,
        )
        before.update(cpu_seconds(rig))

    figures = await run_dispatch(rig, scenario, before_post=switch_on)
    cpu = cpu_spent(before, cpu_seconds(rig))
    applied, last_after = await _await_applied(rig, figures)
    stats = await rig.simulator.stats()
    await rig.simulator.configure(receipts_url=None)
    return _Flowing(
        figures=figures,
        cpu=cpu,
        applied=applied,
        last_decided_after_s=last_after,
        stats=stats,
        stored=await _stored_during(rig, figures),
        statuses=await data.status_counts(rig.db, figures.dispatch_id),
        mismatched=await _mismatched(rig, figures.dispatch_id),
    )


def _completed_at(dispatch: data.DispatchRow, figures: DispatchFigures) -> datetime:
    return dispatch.created_at + timedelta(seconds=figures.elapsed_s)


async def _await_applied(rig: Rig, figures: DispatchFigures) -> tuple[bool, float | None]:
    """Until no message of the dispatch is left `sent` and no receipt of it waits; whether that
    came within APPLIED_TIMEOUT_S, and the seconds from completed to the last one decided."""
    deadline = time.monotonic() + APPLIED_TIMEOUT_S
    dispatch_id = figures.dispatch_id
    while True:
        left = await rig.db.fetchval(
            "SELECT (SELECT count(*) FROM message WHERE dispatch_id = $1 AND status = 'sent')"
            " + (SELECT count(*) FROM message_receipt r JOIN message m ON m.id = r.message_id"
            "    WHERE m.dispatch_id = $1 AND NOT r.applied)",
            dispatch_id,
        )
        if not left:
            break
        if time.monotonic() >= deadline:
            log.warning("dispatch %d: %d messages or receipts not applied", dispatch_id, left)
            return False, None
        await asyncio.sleep(APPLIED_POLL_S)
    dispatch = await data.load_dispatch(rig.db, dispatch_id)
    last = await rig.db.fetchval(
        "SELECT max(updated_at) FROM message WHERE dispatch_id = $1 AND receipt_at IS NOT NULL",
        dispatch_id,
    )
    if last is None:
        return True, None
    return True, round((last - _completed_at(dispatch, figures)).total_seconds(), 2)


async def _stored_during(rig: Rig, figures: DispatchFigures) -> int:
    """Receipts of the dispatch the API stored between its POST and its completion."""
    dispatch = await data.load_dispatch(rig.db, figures.dispatch_id)
    return int(
        await rig.db.fetchval(
            "SELECT count(*) FROM message_receipt r JOIN message m ON m.id = r.message_id"
            " WHERE m.dispatch_id = $1 AND r.received_at <= $2",
            figures.dispatch_id,
            _completed_at(dispatch, figures),
        )
    )


async def _mismatched(rig: Rig, dispatch_id: int) -> int:
    """Messages whose status is not what the simulator decided for them (no decision: every
    message it never accepted counts)."""
    decided = await rig.simulator.receipt_outcomes()
    rows = await rig.db.fetch("SELECT id, status FROM message WHERE dispatch_id = $1", dispatch_id)
    wrong = 0
    for row in rows:
        outcome = decided.get(int(row["id"]))
        expected = (
            None if outcome is None else "delivered" if outcome == "delivered" else "undelivered"
        )
        wrong += row["status"] != expected
    return wrong


# The table


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status} {count:,}" for status, count in sorted(statuses.items())) or "-"


def _met(met: bool) -> str:
    return "met" if met else "NOT MET"


def posting_line(p: PostingFigures) -> list[str]:
    latency = p.latency

    def cpu(name: str) -> str:
        return _num(p.cpu_s.get(name), 2)

    def per(name: str) -> str:
        seconds = p.cpu_s.get(name)
        return "-" if seconds is None or not p.receipts else f"{1000 * seconds / p.receipts:.3f}"

    outcomes = ", ".join(f"{key} {n:,}" for key, n in p.outcomes.items() if n)
    return [
        f"  {p.mode} ({p.per_request:,} per request, {p.posters} posters, #{p.dispatch_id}): "
        f"{p.receipts:,} receipts in {p.requests:,} requests, {p.elapsed_s} s: "
        f"{_num(p.receipts_per_s)} receipts/s (target {p.target_per_s:,.0f}: {_met(p.target_met)})",
        f"    per request p50 / p99 / max {_num(latency.p50_ms, 1)} / {_num(latency.p99_ms, 1)}"
        f" / {_num(latency.max_ms, 1)} ms; failed requests {p.failed_requests}; answers: "
        f"{outcomes or '-'}",
        f"    messages afterwards: {_statuses(p.statuses)} "
        f"({'as posted' if p.statuses_match else 'NOT as posted: ' + str(p.posted)})",
        f"    CPU over the {p.elapsed_s} s: API {cpu('api')} s, PostgreSQL {cpu('postgres')} s, "
        f"posters {cpu('bench')} s; per receipt API {per('api')} ms, PostgreSQL "
        f"{per('postgres')} ms",
        *(f"    error: {error}" for error in p.errors),
    ]


def flow_lines(f: FlowFigures) -> list[str]:
    w, r = f.without, f.with_receipts
    ratio = "-" if f.ratio is None else f"{f.ratio:.2f}"
    return [
        f"  dispatch of {r.scenario.clients:,} at 0 ms, {f.order}: {_num(w.messages_per_s)} "
        f"messages/s without receipts (#{w.dispatch_id}, {w.elapsed_s} s), "
        f"{_num(r.messages_per_s)} with "
        f"them flowing (#{r.dispatch_id}, {r.elapsed_s} s): {ratio} "
        f"(target >= {f.target_ratio:.2f}: {_met(f.target_met)})",
        f"    receipts stored during it {f.stored_during:,} ({_num(f.stored_per_s)}/s); the "
        f"simulator posted {f.simulator_posted:,} (duplicates included), {f.simulator_failed} "
        f"failed; all applied: {f.all_applied}, the last "
        f"{_num(f.last_decided_after_s, 2)} s after completed",
        f"    statuses {_statuses(f.statuses)}; not as the simulator decided: {f.mismatched}",
        "    CPU s without / with receipts: "
        + ", ".join(
            f"{name} {_num(f.cpu_without_s.get(name), 2)} / {_num(seconds, 2)}"
            for name, seconds in f.cpu_with_s.items()
        ),
    ]


def receipt_lines(figures: ReceiptFigures) -> list[str]:
    lines = [f"Receipts through POST {RECEIPTS_PATH} ({figures.messages:,} sent messages each):"]
    for posting in (figures.lists, figures.single):
        if posting is not None:
            lines += posting_line(posting)
    for flow in figures.flows:
        lines += flow_lines(flow)
    if figures.flow_pairs > 1 and figures.flow_mean_ratio is not None:
        lines.append(
            f"  over the {figures.flow_pairs} pairs: {_num(figures.flow_mean_without)} "
            f"messages/s without receipts, {_num(figures.flow_mean_with)} with: "
            f"{figures.flow_mean_ratio:.2f} (target >= {1 - SEND_RATE_TOLERANCE:.2f}: "
            f"{_met(bool(figures.flow_target_met))})"
        )
    return lines
