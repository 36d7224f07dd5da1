"""The send routes through the API: /routes with each route's definition and health, their
circuit state in /metrics, the statistics per route read from message_route_count, and a
message's route and segments with the lists' route filter."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import Database
from core.models import Message, send_route_t
from core.settings import Settings
from core.stats import compact_counts
from tests.factories import make_client, make_dispatch, make_routed_messages
from tests.support import Queues, api_client, auth_headers, settings_for

TOKEN_ENV = "TEST_ROUTE_TOKEN"
SECRET = "route-secret-never-shown"
ROUTES = [
    {"name": "spare", "url": "http://127.0.0.1:9/v1", "token_env": TOKEN_ENV, "priority": 50},
    {
        "name": "mts",
        "url": "http://127.0.0.1:9/mts/",
        "token_env": TOKEN_ENV,
        "rate_per_second": 40,
        "concurrency": 8,
        "operator_codes": ["916", "915"],
        "prefixes": ["7916", "7915"],
        "priority": 10,
    },
    {
        "name": "bulk",
        "url": "https://bulk.example/v1",
        "token_env": TOKEN_ENV,
        "rate_per_second": 5,
        "rate_unit": "messages",
        "priority": 20,
    },
]


@pytest.fixture
async def routed(
    settings: Settings,
    dev_env: WorkflowEnvironment,
    queues: Queues,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with three routes configured."""
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    s = settings_for(settings, dev_env.client, queues, send_routes=json.dumps(ROUTES))
    app: FastAPI = create_app(s)
    async with app.router.lifespan_context(app), api_client(app) as client:
        yield client


async def set_circuit(db: Database, name: str, state: str, **values: object) -> None:
    async with db.sessions() as session:
        await session.execute(
            sa.insert(send_route_t)
            .values(name=name, state=state, since=values.pop("since"))
            .values(**values)
        )
        await session.commit()


async def test_routes_in_priority_order_with_their_health(
    routed: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    down = datetime.now(UTC) - timedelta(minutes=3)
    probe = datetime.now(UTC) + timedelta(seconds=8)
    await set_circuit(
        db,
        "bulk",
        "open",
        since=down + timedelta(minutes=1),
        down_since=down,
        probe_at=probe,
        failed_probes=2,
        last_error="HTTP 503",
        last_error_at=down + timedelta(minutes=1),
    )
    response = await routed.get("/api/v1/routes")
    assert response.status_code == 200, response.text
    assert SECRET not in response.text and "token" not in response.text
    routes = response.json()
    assert [r["name"] for r in routes] == ["mts", "bulk", "spare"]
    mts, bulk, spare = routes
    assert mts == {
        "name": "mts",
        "url": "http://127.0.0.1:9/mts",
        "rate_per_second": 40.0,
        "rate_unit": "segments",
        "concurrency": 8,
        "operator_codes": ["915", "916"],
        "prefixes": ["7916", "7915"],
        "priority": 10,
        "health": {
            "state": "closed",
            "since": None,
            "down_since": None,
            "next_probe_at": None,
            "failed_probes": 0,
            "last_error": None,
            "last_error_at": None,
        },
    }
    assert bulk["rate_unit"] == "messages" and bulk["operator_codes"] is None
    health = bulk["health"]
    assert (health["state"], health["failed_probes"], health["last_error"]) == (
        "open",
        2,
        "HTTP 503",
    )
    assert datetime.fromisoformat(health["down_since"]) == down
    assert datetime.fromisoformat(health["next_probe_at"]) == probe
    assert spare["health"]["state"] == "closed"

    reader = auth_headers(settings, frozenset({"clients:read"}))
    refused = await routed.get("/api/v1/routes", headers=reader)
    assert refused.status_code == 403 and "dispatches:read" in refused.text


async def test_metrics_show_every_routes_state(routed: httpx.AsyncClient, db: Database) -> None:
    now = datetime.now(UTC)
    await set_circuit(db, "mts", "probing", since=now, down_since=now, probe_at=now)
    scraped = (await routed.get("/metrics")).text
    lines = set(scraped.splitlines())
    for route, up in (("mts", "probing"), ("bulk", "closed"), ("spare", "closed")):
        for state in ("closed", "open", "probing"):
            value = "1.0" if state == up else "0.0"
            assert f'mailing_route_state{{route="{route}",state="{state}"}} {value}' in lines
    # Closed again: the next scrape says so.
    async with db.sessions() as session:
        await session.execute(sa.update(send_route_t).values(state="closed"))
        await session.commit()
    scraped = (await routed.get("/metrics")).text
    assert 'mailing_route_state{route="mts",state="closed"} 1.0' in scraped.splitlines()


async def routed_dispatch(db: Database) -> tuple[int, list[Message], list[int]]:
    """A dispatch of six messages: sent through mts and bulk, one failed, one pinned to bulk
    after a timeout, one pending with no route yet, one pinned and then expired."""
    clients = [await make_client(db) for _ in range(6)]
    dispatch = await make_dispatch(db)
    messages = await make_routed_messages(
        db,
        dispatch,
        [
            (clients[0], "sent", "mts", 2),
            (clients[1], "sent", "mts", 2),
            (clients[2], "sent", "bulk", 2),
            (clients[3], "failed", "mts", 2),
            (clients[4], "retrying", "bulk", 2),
            (clients[5], "pending", None, None),
        ],
    )
    assert dispatch.id is not None
    return dispatch.id, messages, [c.id for c in clients if c.id is not None]


async def test_statistics_per_route(api: httpx.AsyncClient, db: Database) -> None:
    dispatch_id, _, _ = await routed_dispatch(db)
    other = await make_dispatch(db)
    await make_routed_messages(db, other, [(await make_client(db), "sent", "mts", 1)])

    one = (await api.get(f"/api/v1/dispatches/{dispatch_id}/stats")).json()
    routes = {r["route"]: r for r in one["routes"]}
    assert list(routes) == ["bulk", "mts"]  # by name
    assert routes["mts"]["messages"] | {"total": 0} == {
        "pending": 0,
        "retrying": 0,
        "sent": 2,
        "delivered": 0,
        "undelivered": 0,
        "failed": 1,
        "expired": 0,
        "cancelled": 0,
        "opted_out": 0,
        "unrendered": 0,
        "capped": 0,
        "total": 0,
    }
    assert (routes["mts"]["messages"]["total"], routes["mts"]["segments"]) == (3, 6)
    assert routes["mts"]["segments_sent"] == 4
    assert routes["bulk"]["messages"]["retrying"] == 1
    assert (routes["bulk"]["segments"], routes["bulk"]["segments_sent"]) == (4, 2)
    # Every sent message has a route.
    assert sum(r["messages"]["sent"] for r in one["routes"]) == one["messages"]["sent"] == 3

    overall = (await api.get("/api/v1/stats")).json()
    totals = {r["route"]: r for r in overall["routes"]}
    assert totals["mts"]["messages"]["sent"] == 3 and totals["mts"]["segments_sent"] == 5
    assert sum(r["messages"]["sent"] for r in overall["routes"]) == overall["totals"]["sent"]
    by_dispatch = {d["dispatch_id"]: d["routes"] for d in overall["dispatches"]}
    assert by_dispatch[dispatch_id] == one["routes"]
    assert [r["route"] for r in by_dispatch[other.id]] == ["mts"]

    # The pinned message expires: its route keeps it, under its new status; folding the
    # counts changes nothing.
    async with db.sessions() as session:
        await session.execute(
            sa.update(Message).where(Message.status == "retrying").values(status="expired")
        )
        await session.commit()
        await compact_counts(session)
    again = (await api.get(f"/api/v1/dispatches/{dispatch_id}/stats")).json()
    bulk = next(r for r in again["routes"] if r["route"] == "bulk")
    assert (bulk["messages"]["retrying"], bulk["messages"]["expired"]) == (0, 1)
    assert bulk["segments"] == 4
    empty = await make_dispatch(db)
    assert (await api.get(f"/api/v1/dispatches/{empty.id}/stats")).json()["routes"] == []


async def test_messages_show_and_filter_by_route(api: httpx.AsyncClient, db: Database) -> None:
    dispatch_id, messages, clients = await routed_dispatch(db)
    url = f"/api/v1/dispatches/{dispatch_id}/messages"
    listed = (await api.get(url)).json()["items"]
    assert [(m["route"], m["segments"]) for m in listed] == [
        ("mts", 2),
        ("mts", 2),
        ("bulk", 2),
        ("mts", 2),
        ("bulk", 2),
        (None, None),
    ]
    mts = (await api.get(url, params={"route": "mts"})).json()
    assert mts["total"] == 3 and {m["route"] for m in mts["items"]} == {"mts"}
    failed = (await api.get(url, params={"route": "mts", "status": "failed"})).json()
    assert [m["id"] for m in failed["items"]] == [messages[3].id]
    # A route that is not configured (any more) is a filter like another.
    gone = await api.get(url, params={"route": "retired-gateway"})
    assert (gone.status_code, gone.json()["total"]) == (200, 0)
    too_long = await api.get(url, params={"route": "r" * 33})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "route"

    client_url = f"/api/v1/clients/{clients[2]}/messages"
    assert (await api.get(client_url, params={"route": "bulk"})).json()["total"] == 1
    assert (await api.get(client_url, params={"route": "mts"})).json()["total"] == 0
