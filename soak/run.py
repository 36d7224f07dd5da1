"""One soak run on a started SoakStack: clients, the three dispatches, the faults and the API
load for the run's length, the paused dispatch's edit, the drain, and the checks.

The driver holds no database connection across the run (PostgreSQL restarts under it): it
connects for each step. Its API calls to the paused dispatch are retried through 503s.
"""

import asyncio
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench import data
from bench.memory import PeakRss
from bench.remote import SimulatorControl
from bench.stack import connect_temporal, wait_until_ready
from core.auth import embedded_tokens
from core.settings import Settings
from core.windows import RUSSIA_ZONES, stored_window
from soak import checks
from soak.checks import Acceptance, Check, DispatchRow, MessageRow
from soak.faults import FaultLoop
from soak.load import ApiLoad, LoadFigures, LoadSettings, analyse
from soak.plan import (
    API_RESTARTS,
    DispatchPlan,
    Profile,
    audiences,
    fault_schedule,
    plan_dispatches,
)
from soak.stack import SoakStack

log = logging.getLogger(__name__)

# The service's settings in the soak, over the bench stack's own (soak.__main__ tells why).
SERVICE_ENV = {
    "WORKER_SHUTDOWN_SECONDS": "10",
    "SEND_RETRY_MAX_SECONDS": "15",
}
SHUTDOWN_SECONDS = 10.0
# 503s are expected from the start of a restart of Temporal or PostgreSQL to this long after it
# is back (the API's pools find out on their next use).
RESTART_GRACE_S = 10.0
READ_P99_TARGET_MS = 500.0
PROGRESS_EVERY_S = 30.0
ACCEPTED_PAGE = 100_000
# The drain: after the faults and the load stop, the dispatches have half the run's length to
# complete, and at least this long.
DRAIN_MIN_S = 120.0
WORKFLOWS_TIMEOUT_S = 120.0
RETRY_STATUSES = frozenset({0, 502, 503, 504})


@dataclass
class SoakResult:
    seed: int
    profile: dict[str, Any]
    started_at: str = ""
    finished_at: str = ""
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    api: dict[str, Any] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)
    memory_mb: dict[str, float] = field(default_factory=dict)
    reconciliation: list[str] = field(default_factory=list)
    restarted_at_end: list[str] = field(default_factory=list)
    edit: dict[str, Any] = field(default_factory=dict)
    drain_s: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.checks) and all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["checks"] = [c.as_json() for c in self.checks]
        fields["ok"] = self.ok
        return fields


async def run_soak(stack: SoakStack, memory: PeakRss, profile: Profile, seed: int) -> SoakResult:
    result = SoakResult(seed=seed, profile=asdict(profile))
    rng = random.Random(seed)
    temporal = await connect_temporal(stack.temporal_address)
    await wait_until_ready(stack, temporal)
    token = embedded_tokens(Settings(data_dir=stack.data_dir, _env_file=None)).mint(subject="soak")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        gateway = SimulatorControl(http, stack.simulator_url)
        await gateway.prepare(latency_ms=profile.latency_ms)
        await gateway.configure(latency_jitter_ms=profile.jitter_ms, seed=seed)
        await _insert_clients(stack, profile)
        memory.reset()
        result.started_at = datetime.now(UTC).isoformat()
        plans = plan_dispatches(profile, now=datetime.now(UTC), rng=rng)
        schedule = fault_schedule(profile, rng)
        ids = {plan.name: await _create(http, stack.api_url, plan) for plan in plans}
        started = time.time()
        for plan in plans:
            log.info("dispatch %d (%s): %s", ids[plan.name], plan.name, json.dumps(plan.body))
        for index, fault in enumerate(schedule, start=1):
            log.info("fault %d planned at +%.0f s: %s", index, fault.at_s, fault.describe())

        load = ApiLoad(
            LoadSettings(
                api_url=stack.api_url,
                token=token,
                dispatch_ids=list(ids.values()),
                control_dispatch_id=ids["paused"],
                users=profile.users,
                seed=seed,
                request_log=stack.data_dir / "requests.ndjson",
                locust_log=stack.logs / "locust.log",
            )
        )
        await asyncio.to_thread(load.start)
        faults = FaultLoop(
            stack=stack,
            gateway=gateway,
            profile=profile,
            schedule=schedule,
            shutdown_seconds=SHUTDOWN_SECONDS,
        )
        paused = next(plan for plan in plans if plan.name == "paused")
        tasks = [
            asyncio.create_task(faults.run(started)),
            asyncio.create_task(
                _pause_edit_resume(http, stack.api_url, ids["paused"], paused, result)
            ),
            asyncio.create_task(_progress(gateway, started)),
        ]
        try:
            await asyncio.sleep(max(0.0, started + profile.seconds - time.time()))
            await tasks[0]
            await tasks[1]
        finally:
            tasks[2].cancel()
            result.restarted_at_end = await faults.finish()
            await asyncio.to_thread(load.stop)
        result.faults = [record.as_json() for record in faults.records]
        # A writer stopped between its pause and its resume leaves the dispatch paused.
        await _control(http, f"{stack.api_url}/api/v1/dispatches/{ids['paused']}/resume", "POST")

        drained = time.time()
        await _drain(stack, list(ids.values()), max(DRAIN_MIN_S, profile.seconds / 2))
        result.drain_s = round(time.time() - drained, 1)
        await _workflows_closed(temporal)
        result.memory_mb = memory.peaks_mb()

        allowed = [
            (f.started - 1.0, (f.ended or f.started) + RESTART_GRACE_S)
            for f in faults.records
            if f.kind in API_RESTARTS
        ]
        figures = analyse(load.settings.request_log, allowed)
        result.api = _api_json(figures)
        acceptances = await _acceptances(http, stack.simulator_url)
        result.gateway = await gateway.stats()
        await _judge(stack, temporal, profile, plans, ids, acceptances, faults, figures, result)
        result.reconciliation = _reconciled(stack)
    result.finished_at = datetime.now(UTC).isoformat()
    return result


async def _insert_clients(stack: SoakStack, profile: Profile) -> None:
    """Each dispatch's clients, tagged its own, zones in turn; phones unique across them."""
    conn = await data.connect(stack.database_url)
    try:
        offset = 0
        for tag, count in audiences(profile):
            records = [
                (number, number[1:4], tag, RUSSIA_ZONES[index % len(RUSSIA_ZONES)])
                for index in range(count)
                for number in [data.phone(offset + index)]
            ]
            await conn.copy_records_to_table(
                "client", records=records, columns=["phone", "operator_code", "tag", "timezone"]
            )
            offset += count
        await conn.execute("ANALYZE client")
    finally:
        await conn.close()
    log.info("%d clients inserted", offset)


async def _create(http: httpx.AsyncClient, api_url: str, plan: DispatchPlan) -> int:
    response = await http.post(f"{api_url}/api/v1/dispatches", json=plan.body)
    if response.status_code != 201:
        raise RuntimeError(f"POST dispatch {plan.name}: {response.status_code} {response.text}")
    return int(response.json()["id"])


async def _control(
    http: httpx.AsyncClient, url: str, method: str, body: dict[str, Any] | None = None
) -> tuple[int, float, float]:
    """The status of a control call, asked again through a restart, and when it was sent and
    answered (epoch seconds)."""
    deadline = time.monotonic() + 120
    while True:
        sent = time.time()
        try:
            response = await http.request(method, url, json=body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        if status not in RETRY_STATUSES or time.monotonic() > deadline:
            return status, sent, time.time()
        await asyncio.sleep(1.0)


async def _pause_edit_resume(
    http: httpx.AsyncClient, api_url: str, dispatch_id: int, plan: DispatchPlan, result: SoakResult
) -> None:
    """Pauses the dispatch at its edit time, edits its text, resumes it at its resume time."""
    assert plan.edit_at is not None and plan.resume_at is not None
    url = f"{api_url}/api/v1/dispatches/{dispatch_id}"
    await asyncio.sleep(max(0.0, plan.edit_at.timestamp() - time.time()))
    paused, paused_at, _ = await _control(http, f"{url}/pause", "POST")
    edited, edit_sent, edit_answered = await _control(
        http, url, "PATCH", {"text": plan.edited_text}
    )
    log.warning("dispatch %d paused (%d) and edited (%d)", dispatch_id, paused, edited)
    await asyncio.sleep(max(0.0, plan.resume_at.timestamp() - time.time()))
    resumed, resumed_at, _ = await _control(http, f"{url}/resume", "POST")
    log.warning("dispatch %d resumed (%d)", dispatch_id, resumed)
    result.edit = {
        "pause": paused,
        "paused_at": paused_at,
        "edit": edited,
        "edit_sent": edit_sent,
        "edit_answered": edit_answered,
        "resume": resumed,
        "resumed_at": resumed_at,
    }


async def _progress(gateway: SimulatorControl, started: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        try:
            stats = await gateway.stats()
        except httpx.HTTPError as error:
            log.warning("gateway stats: %s", error)
            continue
        log.info(
            "+%.0f s: gateway accepted %d (%d unique), answers %s",
            time.time() - started,
            stats["accepted"],
            stats["unique_accepted"],
            stats["by_status"],
        )


async def _drain(stack: SoakStack, dispatch_ids: list[int], timeout_s: float) -> None:
    """Until every dispatch of the run is completed (or the timeout: the checks tell)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = await data.connect(stack.database_url)
        try:
            rows = await conn.fetch(
                "SELECT id, status FROM dispatch WHERE id = ANY($1::bigint[])", dispatch_ids
            )
        finally:
            await conn.close()
        statuses = {int(row["id"]): str(row["status"]) for row in rows}
        if all(status == "completed" for status in statuses.values()):
            return
        log.info("draining: %s", statuses)
        await asyncio.sleep(5.0)
    log.error("the dispatches did not complete within %.0f s of the end", timeout_s)


async def _workflows_closed(temporal: Client) -> None:
    deadline = time.monotonic() + WORKFLOWS_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await temporal.count_workflows('ExecutionStatus="Running"')).count == 0:
            return
        await asyncio.sleep(2.0)


async def _acceptances(http: httpx.AsyncClient, simulator_url: str) -> list[Acceptance]:
    found: list[Acceptance] = []
    while True:
        response = await http.get(
            f"{simulator_url}/_sim/accepted", params={"offset": len(found), "limit": ACCEPTED_PAGE}
        )
        response.raise_for_status()
        page = [
            Acceptance(int(a["msg_id"]), float(a["arrived_at"]), float(a["accepted_at"]), a["text"])
            for a in response.json()
        ]
        found += page
        if len(page) < ACCEPTED_PAGE:
            return found


async def _judge(
    stack: SoakStack,
    temporal: Client,
    profile: Profile,
    plans: list[DispatchPlan],
    ids: dict[str, int],
    acceptances: list[Acceptance],
    faults: FaultLoop,
    figures: LoadFigures,
    result: SoakResult,
) -> None:
    conn = await data.connect(stack.database_url)
    try:
        messages = [
            MessageRow(int(r["id"]), int(r["dispatch_id"]), str(r["status"]), str(r["timezone"]))
            for r in await conn.fetch(
                "SELECT m.id, m.dispatch_id, m.status, c.timezone FROM message m"
                " JOIN client c ON c.id = m.client_id WHERE m.dispatch_id = ANY($1::bigint[])",
                list(ids.values()),
            )
        ]
        names = {dispatch_id: name for name, dispatch_id in ids.items()}
        dispatches = [
            DispatchRow(
                int(r["id"]),
                names[int(r["id"])],
                str(r["status"]),
                r["start_at"],
                r["end_at"],
                stored_window(r["window_start"], r["window_end"]),
            )
            for r in await conn.fetch(
                "SELECT id, status, start_at, end_at, window_start, window_end FROM dispatch"
                " WHERE id = ANY($1::bigint[])",
                list(ids.values()),
            )
        ]
        kept, counted = await _counts(conn)
    finally:
        await conn.close()
    for plan in plans:
        statuses: dict[str, int] = {}
        for message in messages:
            if message.dispatch_id == ids[plan.name]:
                statuses[message.status] = statuses.get(message.status, 0) + 1
        result.dispatches.append(
            {
                "name": plan.name,
                "id": ids[plan.name],
                "clients": plan.clients,
                "body": plan.body,
                "opens": None
                if plan.opens is None
                else [plan.opens.zone, plan.opens.at.isoformat()],
                "closes": None
                if plan.closes is None
                else [plan.closes.zone, plan.closes.at.isoformat()],
                "statuses": statuses,
            }
        )
    running = (await temporal.count_workflows('ExecutionStatus="Running"')).count
    paused = next(plan for plan in plans if plan.name == "paused")
    edit = result.edit
    result.checks = [
        checks.every_message_final(messages, dispatches),
        checks.nothing_lost(messages, acceptances, faults.records),
        checks.each_once(
            acceptances,
            faults.records,
            send_concurrency=profile.send_concurrency,
            workers=profile.workers,
            unrecorded_ids=checks.unrecorded(messages, acceptances),
        ),
        *checks.inside_windows(messages, dispatches, acceptances),
        checks.the_edit(
            acceptances,
            (m.id for m in messages if m.dispatch_id == ids["paused"]),
            before_text=str(paused.body["text"]),
            after_text=str(paused.edited_text),
            edit_sent=float(edit.get("edit_sent", 0.0)),
            edit_answered=float(edit.get("edit_answered", 0.0)),
        )
        if edit.get("edit") == 200
        else Check(
            "the paused dispatch's edit applies from then on",
            False,
            f"the edit was not made: PATCH answered {edit.get('edit')}",
        ),
        checks.counts_kept(kept, counted),
        Check(
            "every workflow of the run closed",
            running == 0,
            f"{running} running",
        ),
        Check(
            "no 5xx but 503 during a restart",
            not figures.unexpected,
            f"{figures.requests} requests: {figures.by_status}; {figures.allowed_503} 503s "
            f"during restarts; unexpected: {len(figures.unexpected)}",
            {"unexpected": figures.unexpected[:50]},
        ),
        Check(
            "read p99 under the load below 500 ms",
            figures.reads_p99_ms < READ_P99_TARGET_MS,
            f"p50 {figures.reads_p50_ms:.0f} ms, p99 {figures.reads_p99_ms:.0f} ms",
        ),
    ]


async def _counts(
    conn: data.Connection,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """What the triggers keep, and the same counted over the messages, by table then key."""
    queries = {
        "message_count": (
            "SELECT dispatch_id || '/' || status AS k, sum(n) AS n FROM message_count GROUP BY 1",
            "SELECT dispatch_id || '/' || status AS k, count(*) AS n FROM message GROUP BY 1",
        ),
        "message_sent_minute": (
            "SELECT dispatch_id || '/' || minute AS k, sum(n) AS n FROM message_sent_minute"
            " GROUP BY 1",
            "SELECT dispatch_id || '/' || date_trunc('minute', sent_at) AS k, count(*) AS n"
            " FROM message WHERE status IN ('sent', 'delivered', 'undelivered')"
            " AND sent_at IS NOT NULL GROUP BY 1",
        ),
        "message_route_count": (
            "SELECT dispatch_id || '/' || route || '/' || status AS k, sum(n) AS n"
            " FROM message_route_count GROUP BY 1",
            "SELECT dispatch_id || '/' || route || '/' || status AS k, count(*) AS n"
            " FROM message WHERE route IS NOT NULL GROUP BY 1",
        ),
    }
    kept: dict[str, dict[str, int]] = {}
    counted: dict[str, dict[str, int]] = {}
    for table, (kept_sql, counted_sql) in queries.items():
        kept[table] = {str(r["k"]): int(r["n"]) for r in await conn.fetch(kept_sql)}
        counted[table] = {str(r["k"]): int(r["n"]) for r in await conn.fetch(counted_sql)}
    return kept, counted


def _reconciled(stack: SoakStack) -> list[str]:
    """The reconciliation's repairs, as the workers logged them."""
    lines: list[str] = []
    for path in sorted(stack.logs.glob("worker-*.log")):
        lines += [
            f"{path.stem}: {line.strip()}"
            for line in path.read_text(errors="replace").splitlines()
            if "reconciled:" in line
        ]
    return lines


def _api_json(figures: LoadFigures) -> dict[str, Any]:
    fields = asdict(figures)
    fields["unexpected"] = figures.unexpected[:50]
    return fields


def write_json(result: SoakResult, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"soak-{stamp}.json"
    path.write_text(json.dumps(result.as_json(), indent=2, default=str) + "\n")
    return path
