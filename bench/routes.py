"""Send routes for the bench: SEND_ROUTES of two routes to two named gateways of the simulator,
and each route's part of a dispatch.

Two ways to use two routes: split by operator code (each client has one route, about half the
clients each: the two-route dispatch), or both serving everyone by priority (the second one
takes over while the first is down: the failover run).
"""

import json
from collections import Counter
from typing import Any

from bench import data
from bench.figures import RemoteFigures, RouteShare
from bench.rig import Rig
from simulator.app import DEFAULT_TOKEN

# The variable that holds the gateways' token: routes name it, never hold it.
TOKEN_ENV = "BENCH_GATEWAY_TOKEN"


def _halves(counts: Counter[str], total: int) -> tuple[list[str], list[str]]:
    """The keys in order, cut where the first part's count is nearest half of `total`."""
    keys = sorted(counts)
    best, seen, cut = total, 0, 1
    for index, key in enumerate(keys[:-1], start=1):
        seen += counts[key]
        if abs(2 * seen - total) < best:
            best, cut = abs(2 * seen - total), index
    return keys[:cut], keys[cut:]


def client_halves(clients: int) -> tuple[str, list[str], list[str]]:
    """How to split the bench's `clients` clients in two of about half each: ("operator_codes",
    lower codes, the others), or, when they all share one code (a few thousand clients or
    fewer), ("prefixes", ...) of their numbers' shortest prefixes that differ."""
    records = list(data.client_records(clients, [data.DEFAULT_ZONE]))
    codes = Counter(code for _, code, _, _ in records)
    if len(codes) > 1:
        return ("operator_codes", *_halves(codes, clients))
    phones = [phone for phone, _, _, _ in records]
    for length in range(5, 12):
        prefixes = Counter(phone[:length] for phone in phones)
        if len(prefixes) > 1:
            return ("prefixes", *_halves(prefixes, clients))
    raise ValueError(f"{clients} clients cannot be split in two by their numbers")


def route(name: str, gateway_url: str, *, priority: int, **serves: list[str]) -> dict[str, Any]:
    """One entry of SEND_ROUTES (core.routes.RouteSpec), without a cap or a concurrency;
    `serves`: its operator_codes or prefixes, if not everyone."""
    return {
        "name": name,
        "url": gateway_url,
        "token_env": TOKEN_ENV,
        "priority": priority,
        **serves,
    }


def split_routes(rig: Rig, clients: int) -> list[dict[str, Any]]:
    """Routes `a` and `b`, to the gateways of the same names, each serving half the clients."""
    field, first, rest = client_halves(clients)
    return [
        route("a", rig.simulator.gateway("a").send_api_url, priority=1, **{field: first}),
        route("b", rig.simulator.gateway("b").send_api_url, priority=2, **{field: rest}),
    ]


def failover_routes(rig: Rig) -> list[dict[str, Any]]:
    """Routes `a` (priority 1) and `b` (2), both serving everyone: `b` while `a` is down."""
    return [
        route("a", rig.simulator.gateway("a").send_api_url, priority=1),
        route("b", rig.simulator.gateway("b").send_api_url, priority=2),
    ]


def routes_env(routes: list[dict[str, Any]]) -> dict[str, str]:
    """The settings of the workers and the API that give them these routes."""
    return {"SEND_ROUTES": json.dumps(routes), TOKEN_ENV: DEFAULT_TOKEN}


def gateway_of(spec: dict[str, Any]) -> str:
    """The simulator's gateway a route posts to (its URL ends in /gateways/<name>/v1)."""
    return str(spec["url"]).rstrip("/").split("/")[-2]


async def prepare_gateways(rig: Rig, routes: list[dict[str, Any]], *, latency_ms: float) -> None:
    """Zeroed counters, healthy switches and this latency at every route's gateway."""
    for spec in routes:
        await rig.simulator.gateway(gateway_of(spec)).prepare(latency_ms=latency_ms)


async def sent_by_route(rig: Rig, dispatch_id: int) -> dict[str, int]:
    rows = await rig.db.fetch(
        "SELECT route, count(*) AS n FROM message WHERE dispatch_id = $1 AND status = 'sent'"
        " GROUP BY route",
        dispatch_id,
    )
    return {str(row["route"]): int(row["n"]) for row in rows}


async def route_shares(
    rig: Rig, dispatch_id: int, routes: list[dict[str, Any]]
) -> tuple[list[RouteShare], RemoteFigures]:
    """Each route's part of the dispatch, and its gateways' counters summed."""
    sent = await sent_by_route(rig, dispatch_id)
    stats = [await rig.simulator.gateway(gateway_of(spec)).figures() for spec in routes]
    total = sum(figures.accepted for figures in stats)
    shares = [
        RouteShare(
            route=spec["name"],
            gateway=gateway_of(spec),
            operator_codes=spec.get("operator_codes"),
            prefixes=spec.get("prefixes"),
            priority=int(spec["priority"]),
            received=figures.received,
            accepted=figures.accepted,
            unique_accepted=figures.unique_accepted,
            duplicates=figures.duplicates,
            max_in_flight=figures.max_in_flight,
            sent=sent.get(spec["name"], 0),
            share_pct=round(100 * figures.accepted / total, 1) if total else None,
        )
        for spec, figures in zip(routes, stats, strict=True)
    ]
    summed = RemoteFigures(
        received=sum(f.received for f in stats),
        accepted=total,
        unique_accepted=sum(f.unique_accepted for f in stats),
        duplicates=sum(f.duplicates for f in stats),
        max_in_flight=sum(f.max_in_flight for f in stats),
    )
    return shares, summed
