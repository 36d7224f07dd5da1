"""Audiences at scale: a bulk import through the API, then lists and statistics with a million
messages in the database, and the locks that a big cancel and a long client history take.

1. A CSV of `rows` clients is streamed from disk to POST /api/v1/clients/import (half the rows
   give a zone, half leave it and the operator code to be derived; each row has two attributes,
   `attributes.city` and `attributes.name`): rows per second, and the API's memory before and at
   its peak.
2. Dispatch A gets one message per imported client (`rows` messages, statuses mixed as a
   finished dispatch's are) and client X a history of HISTORY dispatches, all inserted by SQL
   through the counting triggers. Each read endpoint is then timed over HTTP.
3. Dispatch B (starting tomorrow, so its workflow sleeps) gets `rows` pending messages and is
   cancelled through the API, while a probe times small reads and writes elsewhere; client X
   is then erased (DELETE ?erase=true) under the same probe.
"""

import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api.paging import encode_cursor
from bench import data
from bench.memory import MB, tree_rss
from bench.rig import Rig, prepare

log = logging.getLogger(__name__)

HISTORY = 1000  # dispatches in client X's history
SAMPLES = 40  # timed requests per endpoint (after 3 unmeasured)
CHUNK = 1 << 16
PROBE_INTERVAL = 0.02


@dataclass
class Latency:
    name: str
    url: str
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class Probe:
    """The slowest of small statements run beside a big one: what it held up."""

    statements: int = 0
    max_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class LockFigures:
    action: str
    messages: int
    elapsed_s: float
    status_code: int
    probe: Probe


@dataclass
class AudienceFigures:
    rows: int
    file_mb: float
    import_s: float
    import_rows_per_s: float
    import_report: dict[str, Any]
    api_rss_before_mb: float
    api_peak_rss_mb: float
    messages: int
    messages_insert_s: float
    latencies: list[Latency]
    locks: list[LockFigures]


CITIES = ("Moscow", "Omsk", "Kazan", "Tomsk", "Samara", "Perm", "Tver", "Sochi")


def write_csv(path: Path, rows: int) -> None:
    zones = data.RUSSIA_ZONES
    with path.open("w", encoding="utf-8") as out:
        out.write("phone,tag,timezone,operator_code,attributes.city,attributes.name\n")
        for index in range(rows):
            zone = zones[index % len(zones)] if index % 2 else ""
            city = CITIES[index % len(CITIES)]
            out.write(f"{data.phone(index)},t{index % 50},{zone},,{city},Client {index}\n")


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


async def run_audience(rig: Rig, *, rows: int) -> AudienceFigures:
    await prepare(rig, clients=0, zones=data.RUSSIA_ZONES, latency_ms=0.0)
    api_url = rig.stack.api_url
    with tempfile.TemporaryDirectory(prefix="mailing-import-") as folder:
        path = Path(folder) / "clients.csv"
        await asyncio.to_thread(write_csv, path, rows)
        size = path.stat().st_size
        before = tree_rss(rig.stack.pid("api")) / MB
        rig.memory.reset()
        log.info("importing %d rows (%.1f MB)", rows, size / MB)
        started = time.monotonic()
        response = await rig.http.post(
            f"{api_url}/api/v1/clients/import",
            content=_chunks(path),
            headers={"Content-Type": "text/csv"},
            params={"on_error": "skip_row"},
            timeout=1800,
        )
        import_s = time.monotonic() - started
    if response.status_code != 200:
        raise RuntimeError(f"import answered {response.status_code}: {response.text[:500]}")
    report = response.json()
    report.pop("rejected_rows", None)
    peak = rig.memory.peaks_mb().get("api", 0.0)
    log.info("import: %s in %.1f s", report, import_s)

    messages_s, a_id, client_x, b_id = await _fill_messages(rig)
    latencies = await _time_reads(rig, a_id, client_x)
    locks = [
        await _under_probe(
            rig, "cancel a dispatch", rows, _post(rig, f"/api/v1/dispatches/{b_id}/cancel"), a_id
        ),
        await _under_probe(
            rig,
            "erase a client with a long history",
            HISTORY + 1,
            _delete(rig, f"/api/v1/clients/{client_x}?erase=true"),
            a_id,
        ),
    ]
    return AudienceFigures(
        rows=rows,
        file_mb=round(size / MB, 1),
        import_s=round(import_s, 2),
        import_rows_per_s=round(rows / import_s),
        import_report=report,
        api_rss_before_mb=round(before, 1),
        api_peak_rss_mb=peak,
        messages=int(await rig.db.fetchval("SELECT count(*) FROM message")),
        messages_insert_s=round(messages_s, 1),
        latencies=latencies,
        locks=locks,
    )


async def _fill_messages(rig: Rig) -> tuple[float, int, int, int]:
    """Dispatch A with a message per client, client X's history, dispatch B all pending."""
    now = datetime.now(UTC)
    started = time.monotonic()
    insert_dispatch = (
        "INSERT INTO dispatch (start_at, end_at, text, target_all, status) "
        "VALUES ($1, $2, 'bench', true, $3) RETURNING id"
    )
    a_id = await rig.db.fetchval(
        insert_dispatch, now - timedelta(days=2), now - timedelta(days=1), "completed"
    )
    await rig.db.execute(
        """
        INSERT INTO message (dispatch_id, client_id, phone, status, sender, attempts, sent_at)
        SELECT $1, id, phone,
            CASE WHEN id % 100 < 85 THEN 'sent' WHEN id % 100 < 90 THEN 'failed'
                 WHEN id % 100 < 95 THEN 'expired' WHEN id % 100 < 98 THEN 'cancelled'
                 ELSE 'opted_out' END,
            'delivery', 1, now()
        FROM client
        """,
        a_id,
    )
    client_x = await rig.db.fetchval("SELECT min(id) FROM client")
    history = await rig.db.fetch(
        "INSERT INTO dispatch (start_at, end_at, text, target_all, status) "
        "SELECT $1, $2, 'history', true, 'completed' FROM generate_series(1, $3) "
        "RETURNING id",
        now - timedelta(days=3),
        now - timedelta(days=2),
        HISTORY,
    )
    await rig.db.execute(
        "INSERT INTO message (dispatch_id, client_id, phone, status, sender) "
        "SELECT d, $1, (SELECT phone FROM client WHERE id = $1), 'sent', 'delivery' "
        "FROM unnest($2::bigint[]) AS d",
        client_x,
        [row["id"] for row in history],
    )
    log.info("dispatch A and a history of %d: %.1f s", HISTORY, time.monotonic() - started)
    b_id = await rig.db.fetchval(
        insert_dispatch, now + timedelta(days=1), now + timedelta(days=2), "scheduled"
    )
    await rig.db.execute(
        "INSERT INTO message (dispatch_id, client_id, phone, sender) "
        "SELECT $1, id, phone, 'delivery' FROM client",
        b_id,
    )
    await rig.db.execute("ANALYZE client")
    await rig.db.execute("ANALYZE message")
    await rig.db.execute("ANALYZE message_count")
    elapsed = time.monotonic() - started
    log.info("messages inserted in %.1f s", elapsed)
    return elapsed, a_id, client_x, b_id


async def _time_reads(rig: Rig, a_id: int, client_x: int) -> list[Latency]:
    last_client = await rig.db.fetchval("SELECT max(id) FROM client")
    last_failed = await rig.db.fetchval(
        "SELECT max(id) FROM message WHERE dispatch_id = $1 AND status = 'failed'", a_id
    )
    deep_client = encode_cursor(last_client - 150)
    deep_failed = encode_cursor(last_failed - 20_000)
    reads = [
        ("statistics (totals and 100 dispatches)", "/api/v1/stats?limit=100"),
        ("one dispatch with its counts", f"/api/v1/dispatches/{a_id}"),
        ("one dispatch's statistics", f"/api/v1/dispatches/{a_id}/stats"),
        ("dispatches, first page with counts", "/api/v1/dispatches?limit=100"),
        (
            "a dispatch's failed messages, first page",
            f"/api/v1/dispatches/{a_id}/messages?status=failed&limit=100",
        ),
        (
            "a dispatch's failed messages, a deep cursor page",
            f"/api/v1/dispatches/{a_id}/messages?status=failed&limit=100&cursor={deep_failed}",
        ),
        ("a client's messages across dispatches", f"/api/v1/clients/{client_x}/messages"),
        ("clients, first page with the exact total", "/api/v1/clients?limit=100"),
        ("clients, first page without the total", "/api/v1/clients?limit=100&with_total=false"),
        ("clients, a deep cursor page", f"/api/v1/clients?limit=100&cursor={deep_client}"),
        ("clients, a deep offset page (for contrast)", "/api/v1/clients?limit=100&offset=900000"),
        ("clients of one tag, first page", "/api/v1/clients?limit=100&tag=t7&with_total=false"),
        ("sends per hour, 72 hours (admin overview)", "/api/v1/stats/timeline?hours=72"),
        ("the remote's error rate, 24 hours", "/api/v1/stats/remote?hours=24"),
        ("a dispatch's sends per minute", f"/api/v1/dispatches/{a_id}/timeline"),
        ("a dispatch's failure reasons", f"/api/v1/dispatches/{a_id}/failures"),
        ("clients a filter matches (dispatch form)", "/api/v1/stats/audience?tag=t7"),
    ]
    figures = []
    for name, path in reads:
        url = f"{rig.stack.api_url}{path}"
        times = []
        for sample in range(SAMPLES + 3):
            started = time.perf_counter()
            response = await rig.http.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text}")
            if sample >= 3:
                times.append(elapsed)
        times.sort()
        figures.append(
            Latency(
                name=name,
                url=path,
                requests=len(times),
                p50_ms=round(statistics.median(times), 1),
                p95_ms=round(times[int(len(times) * 0.95) - 1], 1),
                max_ms=round(times[-1], 1),
            )
        )
        log.info("%s: p95 %.1f ms", name, figures[-1].p95_ms)
    return figures


def _post(rig: Rig, path: str) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        response = await rig.http.post(f"{rig.stack.api_url}{path}", timeout=600)
        return response.status_code

    return call


def _delete(rig: Rig, path: str) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        response = await rig.http.delete(f"{rig.stack.api_url}{path}", timeout=600)
        return response.status_code

    return call


async def _under_probe(
    rig: Rig, action: str, messages: int, call: Callable[[], Awaitable[int]], a_id: int
) -> LockFigures:
    """Runs `call` while another connection keeps timing small reads and writes elsewhere:
    a message of dispatch A updated, a client added, the statistics read."""
    probe = Probe()
    done = asyncio.Event()
    connection = await data.connect(rig.stack.database_url)
    message_id = await rig.db.fetchval("SELECT max(id) FROM message WHERE dispatch_id = $1", a_id)

    async def timed(name: str, step: Awaitable[Any]) -> None:
        started = time.perf_counter()
        await step
        elapsed = (time.perf_counter() - started) * 1000
        probe.max_ms[name] = round(max(probe.max_ms.get(name, 0.0), elapsed), 1)
        probe.statements += 1

    async def probing() -> None:
        index = 0
        while not done.is_set():
            index += 1
            await timed(
                "update a message of another dispatch",
                connection.execute(
                    "UPDATE message SET attempts = attempts + 1 WHERE id = $1", message_id
                ),
            )
            await timed(
                "add a client",
                connection.execute(
                    "INSERT INTO client (phone, operator_code, tag, timezone) "
                    "VALUES ($1, '916', 'probe', 'Europe/Moscow') ON CONFLICT DO NOTHING",
                    f"7916{index:07d}",
                ),
            )
            await timed("read the statistics", rig.http.get(f"{rig.stack.api_url}/api/v1/stats"))
            await asyncio.sleep(PROBE_INTERVAL)

    task = asyncio.create_task(probing())
    started = time.monotonic()
    try:
        status_code = await call()
    finally:
        elapsed = time.monotonic() - started
        done.set()
        await task
        await connection.close()
    log.info("%s: %d in %.1f s; probe %s", action, status_code, elapsed, probe.max_ms)
    return LockFigures(
        action=action,
        messages=messages,
        elapsed_s=round(elapsed, 2),
        status_code=status_code,
        probe=probe,
    )
