"""The soak's API load: the real locustfile for a few seconds against the API over HTTP (a
worker, the dev server, PostgreSQL), and the analysis of a request log written by hand."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core.auth import ALL_PERMISSIONS, embedded_tokens
from soak.load import ApiLoad, LoadSettings, analyse, figures_lines, nearest_rank
from tests.e2e.test_admin_browser import site
from tests.support import api_client

# The API served over HTTP with a worker, as the admin's browser tests have it.
__all__ = ["site"]

DISPATCHES = "/api/v1/dispatches"
READER_ROUTES = {
    "GET /api/v1/stats",
    "GET /api/v1/dispatches",
    "GET /api/v1/dispatches/{id}",
    "GET /api/v1/dispatches/{id}/stats",
    "GET /api/v1/dispatches/{id}/messages",
    "GET /api/v1/clients",
    "GET /api/v1/clients/{id}",
    "GET /admin",
    "GET /admin/dispatches/{id}",
    "GET /admin/dispatches/{id}/live",
    "GET /admin/dispatches/{id}/progress",
}
WRITER_ROUTES = {
    "POST /api/v1/clients",
    "PATCH /api/v1/clients/{id}",
    "POST /api/v1/dispatches/{id}/pause",
    "POST /api/v1/dispatches/{id}/resume",
}
RUN_SECONDS = 8.0
# The writers pick their tasks at random: past RUN_SECONDS the load runs on until each route
# has been asked at least once, for this long at most.
COVERAGE_SECONDS = 60.0


async def running_dispatch(api: httpx.AsyncClient) -> int:
    """A running dispatch to three clients in UTC whose window opens in about three hours:
    its cohort sleeps through the test, so that pause and resume apply."""
    for phone in ("79161234567", "79031234567", "79261234567"):
        response = await api.post(
            "/api/v1/clients", json={"phone": phone, "tag": "soak-test", "timezone": "UTC"}
        )
        assert response.status_code == 201, response.text
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    response = await api.post(
        DISPATCHES,
        json={
            "start_at": now.isoformat(),
            "end_at": (now + timedelta(days=1)).isoformat(),
            "text": "Soak",
            "filter": {"tags": ["soak-test"]},
            "window": {
                "start": opens.strftime("%H:%M"),
                "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
            },
        },
    )
    assert response.status_code == 201, response.text
    dispatch_id = int(response.json()["id"])
    async with asyncio.timeout(30):
        while (await api.get(f"{DISPATCHES}/{dispatch_id}")).json()["status"] != "running":
            await asyncio.sleep(0.1)
    return dispatch_id


def routes_in(request_log: Path) -> set[str]:
    if not request_log.exists():
        return set()
    lines = request_log.read_text().splitlines()
    return {json.loads(line)["route"] for line in lines if line.endswith("}")}


@pytest.mark.slow
async def test_the_load_asks_every_route_and_meets_no_server_error(
    site: tuple[FastAPI, str], tmp_path: Path
) -> None:
    app, base_url = site
    async with api_client(app) as api:
        dispatch_id = await running_dispatch(api)
        token = embedded_tokens(app.state.settings).mint(
            subject="soak", permissions=ALL_PERMISSIONS
        )
        request_log = tmp_path / "requests.ndjson"
        load = ApiLoad(
            LoadSettings(
                api_url=base_url,
                token=token,
                dispatch_ids=[dispatch_id],
                control_dispatch_id=dispatch_id,
                users=4,
                seed=7,
                request_log=request_log,
                locust_log=tmp_path / "locust.log",
            )
        )
        # Blocking calls off the loop: the API answers Locust from this loop.
        await asyncio.to_thread(load.start)
        try:
            await asyncio.sleep(RUN_SECONDS)
            deadline = time.monotonic() + COVERAGE_SECONDS
            while routes_in(request_log) < READER_ROUTES | WRITER_ROUTES:
                assert time.monotonic() < deadline, routes_in(request_log)
                await asyncio.sleep(0.5)
        finally:
            stopping = time.monotonic()
            await asyncio.to_thread(load.stop)
            stopped_in = time.monotonic() - stopping
        load.stop()  # again: nothing

        assert load.process is not None and load.process.returncode is not None
        # SIGTERM, not the SIGKILL after 15 s: a writer between pause and resume ends its task.
        assert load.process.returncode >= 0 and stopped_in < 15, load.log_tail()
        figures = analyse(request_log, [])
        lines = "\n".join(figures_lines(figures))
        assert set(figures.by_route) == READER_ROUTES | WRITER_ROUTES, lines
        assert figures.unexpected == [], lines
        assert all(0 < int(status) < 500 for status in figures.by_status), lines
        for route in READER_ROUTES:
            assert set(figures.by_route[route].by_status) == {"200"}, (route, lines)
        pause = figures.by_route["POST /api/v1/dispatches/{id}/pause"]
        assert set(pause.by_status) <= {"200", "409"}, lines
        assert "201" in figures.by_route["POST /api/v1/clients"].by_status, lines
        for number in (figures.reads_p50_ms, figures.reads_p99_ms):
            assert isinstance(number, float) and 0 < number < 10_000
        for route_figures in figures.by_route.values():
            assert 0 < route_figures.p50_ms <= route_figures.p99_ms <= route_figures.max_ms
        users = {json.loads(line)["user"] for line in request_log.read_text().splitlines()}
        assert users == {"Reader", "Writer"}

        created = (await api.get("/api/v1/clients", params={"tag": "soak-writer"})).json()
        assert created["total"] >= 1
        client = created["items"][0]
        assert client["timezone"] != "UTC" and client["phone"].startswith("7958")

        # Whatever a writer left it as, the dispatch still answers its commands; then it ends.
        response = await api.post(f"{DISPATCHES}/{dispatch_id}/cancel")
        assert response.status_code == 200, response.text


def write_log(path: Path, rows: list[dict[str, Any]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


def row(t: float, route: str, status: int, ms: float) -> dict[str, Any]:
    return {
        "t": t,
        "route": route,
        "method": route.split()[0],
        "status": status,
        "ms": ms,
        "user": "Reader",
    }


def test_a_503_is_allowed_only_within_a_restart_and_a_500_never(tmp_path: Path) -> None:
    log = tmp_path / "requests.ndjson"
    stats, create = "GET /api/v1/stats", "POST /api/v1/clients"
    write_log(
        log,
        [
            row(100.0, stats, 200, 10),
            row(101.0, stats, 200, 20),
            row(102.0, stats, 503, 30),  # within the restart
            row(103.0, stats, 0, 40),  # no answer, within it
            row(104.0, stats, 500, 50),  # within it, but a 500
            row(105.0, create, 201, 7),
            row(108.5, create, 0, 2000),  # started before its end, refused after: overlaps
            row(120.0, create, 503, 5),  # after it
            row(121.0, stats, 503, 1),  # after it
        ],
        tail='{"t": 122.0, "route": "GET /api',  # cut short by a kill
    )
    figures = analyse(log, [(102.0, 110.0)])

    assert figures.requests == 9
    assert figures.by_status == {"0": 2, "200": 2, "201": 1, "500": 1, "503": 3}
    assert figures.allowed_503 == 3
    assert figures.unexpected == [
        {"t": 104.0, "route": stats, "status": 500},
        {"t": 120.0, "route": create, "status": 503},
        {"t": 121.0, "route": stats, "status": 503},
    ]
    reads = figures.by_route[stats]
    assert (reads.count, reads.by_status) == (6, {"0": 1, "200": 2, "500": 1, "503": 2})
    # Nearest rank over 1, 10, 20, 30, 40, 50: the 3rd value, and the 6th.
    assert (reads.p50_ms, reads.p99_ms, reads.max_ms) == (20.0, 50.0, 50.0)
    assert (figures.reads_p50_ms, figures.reads_p99_ms) == (20.0, 50.0)
    assert figures.by_route[create].p50_ms == 7.0

    later = analyse(log, [], since=110.0)
    assert later.requests == 2 and len(later.unexpected) == 2 and later.allowed_503 == 0

    lines = figures_lines(figures)
    assert any(line.startswith(stats) and "503:2" in line for line in lines)


def test_nearest_rank() -> None:
    assert nearest_rank([], 99) == 0.0
    assert nearest_rank([5.0], 50) == 5.0
    values = [float(n) for n in range(1, 101)]
    assert (nearest_rank(values, 50), nearest_rank(values, 99), nearest_rank(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
